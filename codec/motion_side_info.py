"""Motion side information: the format in which a P-frame's motion travels to the server.

The edge finds a frame's motion (:mod:`codec.motion_estimation`), :class:`MotionCoder`
quantizes and writes it; the server decodes exactly the quantized motion and samples it at
the feature tensor's positions (:mod:`codec.latent_motion`)::

    edge:    affine theta / coarse flow ─ quantize ─▶ symbols ─ encode ─▶ payload (bytes)
    server:  payload ─ decode ─▶ AffineMotion | FlowMotion  (== quantize's result, bit-exact)

:class:`MotionCoder` writes one self-contained payload per P-frame (its length comes from the
container). ``varint`` is unsigned LEB128 (minimal, at most 10 bytes); ``zigzag`` maps
``0, −1, 1, −2, …`` to ``0, 1, 2, 3, …``::

    affine (kind 1)   typically 7–15 bytes
      kind            u8             1
      A − I           zigzag varint × 4   row-major, integer multiples of affine_step
      t               zigzag varint × 2   x then y, integer multiples of translation_step

    coarse flow (kind 2)   6 bytes for a constant flow, else 6 + ≥ 8 bytes of rANS data
      kind            u8             2
      grid check      u8             16·(hb mod 16) + (wb mod 16) of the (hb, wb) grid
      per channel (x then y):
        mode          u8             0..22    "centre" predictor, Gaussian scale index k
                                     64..86   "gradient" predictor, scale index k − 64
                                     255      constant channel: every cell equals the centre
        centre        zigzag varint  an integer symbol (see below)
      residuals       rANS (compressai, through codec.entropy.GaussianCoder): the residuals
                      of the non-constant channels, shape (1, C, hb, wb), zero-mean Gaussian
                      with scale σ_k = 0.11·2^(k/2) per channel; absent when both channels
                      are constant

The coarse flow is one value per ``block × block`` cell, on the grid ``(hb, wb) = (⌈H/block⌉,
⌈W/block⌉)`` implied by the input size (and checked against the grid byte), quantized to
integer symbols ``q = round(v/step)``. A channel's residuals are ``q − centre`` ("centre"
predictor: good for noisy or mostly translational flows) or, with the "gradient" predictor,
``q[i,j] − (q[i,j−1] + q[i−1,j] − q[i−1,j−1])`` inside, the left / upper neighbour on the
first row / column and the centre at the origin: exact for affine motion up to rounding. The
encoder picks, per channel, the predictor and scale with the fewest estimated bits. The
decoder rebuilds the very same scale tensor, and accepts the rANS data only if re-encoding the
decoded residuals gives it back byte for byte, so truncated, padded or altered data is caught.

The steps and ``block`` are codec configuration, not sent: encoder and decoder must be built
with the same :class:`MotionCoder` arguments. :meth:`MotionCoder.quantize` returns exactly
what :meth:`MotionCoder.decode` will produce, so the encoder predicts from the motion the
decoder has; everything is computed on the CPU and is bit-exact between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from featcodec.codec.bitstream import Reader, varint, zigzag
from featcodec.codec.entropy import GaussianCoder
from featcodec.codec.errors import BitstreamError, InputError
from featcodec.codec.motion import check_size

__all__ = ["AffineMotion", "FlowMotion", "Motion", "MotionCoder"]

KIND_AFFINE = 1
KIND_FLOW = 2

# Limits that make a decoded value "absurd" (and that the encoder refuses to produce).
MAX_LINEAR = 4.0  # |A − I| entries
MAX_TRANSLATION = float(1 << 18)  # px
FLOW_LIMIT_EXTENTS = 2  # |coarse flow| ≤ this many times the grid's larger extent, in px
MAX_SYMBOL = 1 << 20  # |coarse-flow symbol|: residuals (≤ 4×) fit compressai's int32
_AFFINE_RANGE = (
    f"edge motion: the affine is out of range (|A − I| ≤ {MAX_LINEAR:g}, "
    f"|t| ≤ {MAX_TRANSLATION:g} px)"
)

# Coarse-flow channel modes and their Gaussian scales σ_k = SCALE_MIN·2^(k/2).
SCALE_MIN = 0.11
SCALE_LEVELS = 23  # σ from 0.11 to 225
MODE_GRADIENT = 64
MODE_CONSTANT = 255
_SCALES = tuple(SCALE_MIN * 2.0 ** (k / 2) for k in range(SCALE_LEVELS))


@dataclass(frozen=True)
class AffineMotion:
    """A global backward affine ``theta`` (2, 3) float32: target → reference points."""

    theta: Tensor


@dataclass(frozen=True)
class FlowMotion:
    """A coarse backward flow ``(2, hb, wb)`` float32 in input pixels, one vector per
    ``block × block`` cell (cell ``k`` centred at ``block·(k + 0.5)`` input px)."""

    flow: Tensor
    block: int


Motion = AffineMotion | FlowMotion
"""What one P-frame's side information carries."""


def _valid_mode(mode: int) -> bool:
    return (
        mode == MODE_CONSTANT
        or 0 <= mode < SCALE_LEVELS
        or MODE_GRADIENT <= mode < MODE_GRADIENT + SCALE_LEVELS
    )


def _grid_check(hb: int, wb: int) -> int:
    return 16 * (hb % 16) + wb % 16


class _PayloadReader(Reader):
    """Reads the fields of one payload: varints of at most 10 bytes, minimal ones only."""

    max_varint_bytes = 10
    truncated = "motion side information: truncated inside the {what}"
    too_long = "motion side information: the {what} varint is too long"
    non_minimal = "motion side information: non-minimal varint ({what})"


def _bits(residuals: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Estimated bits (one per scale) of coding integer ``residuals`` with zero-mean discretised
    Gaussians of each of ``scales``: the rate estimate the encoder's choices minimise."""
    values, counts = np.unique(np.abs(residuals), return_counts=True)
    r = torch.from_numpy(values.astype(np.float64)).reshape(1, -1)
    s = torch.tensor(scales, dtype=torch.float64).reshape(-1, 1)
    inv = 1.0 / (s * math.sqrt(2.0))
    p = 0.5 * (torch.erfc((r - 0.5) * inv) - torch.erfc((r + 0.5) * inv))
    bits = -torch.log2(p.clamp_min(1e-9))
    return (bits * torch.from_numpy(counts.astype(np.float64))).sum(dim=1).numpy()


def _gradient_residuals(q: np.ndarray, centre: int) -> np.ndarray:
    """Residuals of the gradient predictor: the 2-D mixed difference of ``q`` (zero outside),
    with the origin predicted by ``centre``."""
    padded = np.zeros((q.shape[0] + 1, q.shape[1] + 1), dtype=np.int64)
    padded[1:, 1:] = q
    r = padded[1:, 1:] - padded[1:, :-1] - padded[:-1, 1:] + padded[:-1, :-1]
    r[0, 0] -= centre
    return r


def _gradient_inverse(r: np.ndarray, centre: int) -> np.ndarray:
    r = r.astype(np.int64)  # a copy
    r[0, 0] += centre
    return np.cumsum(np.cumsum(r, axis=0), axis=1)


class MotionCoder:
    """Quantizes and (de)serialises P-frame motion; see the module docstring for the formats.

    Args:
        block: cell size in input px of the coarse flow.
        step: quantization step in px of the coarse flow.
        affine_step: quantization step of the linear part ``A − I`` of an affine.
        translation_step: quantization step in px of an affine's translation.
    """

    def __init__(
        self,
        block: int = 16,
        step: float = 0.25,
        affine_step: float = 1 / 4096,
        translation_step: float = 1 / 64,
    ) -> None:
        if isinstance(block, bool) or not isinstance(block, Integral) or block < 1:
            raise InputError(f"edge motion: the block must be an integer >= 1, not {block!r}")
        for name, value in (
            ("step", step),
            ("affine_step", affine_step),
            ("translation_step", translation_step),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InputError(f"edge motion: {name} must be a positive number, not {value!r}")
        self.block = int(block)
        self.step = float(step)
        self.affine_step = float(affine_step)
        self.translation_step = float(translation_step)
        self._gaussian: GaussianCoder | None = None

    def __repr__(self) -> str:
        return (
            f"MotionCoder(block={self.block}, step={self.step}, "
            f"affine_step={self.affine_step}, translation_step={self.translation_step})"
        )

    @property
    def gaussian(self) -> GaussianCoder:
        """The entropy coder of the coarse-flow residuals (tables built on first use)."""
        if self._gaussian is None:
            self._gaussian = GaussianCoder().eval()
        return self._gaussian

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The coarse grid ``(⌈H/block⌉, ⌈W/block⌉)`` of an input of ``input_size``."""
        H, W = check_size(input_size)
        return -(-H // self.block), -(-W // self.block)

    # -- coarse flow -------------------------------------------------------------------------

    def coarse(self, flow: Tensor) -> FlowMotion:
        """Block averages of a dense backward flow ``(2, H, W)`` or ``(1, 2, H, W)`` (input px),
        over ``block × block`` cells; partial cells at the right and bottom edges average their
        own pixels. Not quantized (see :meth:`quantize`)."""
        ok = isinstance(flow, Tensor) and (
            (flow.dim() == 3 and flow.shape[0] == 2)
            or (flow.dim() == 4 and tuple(flow.shape[:2]) == (1, 2))
        )
        if not ok:
            shape = tuple(flow.shape) if isinstance(flow, Tensor) else type(flow).__name__
            raise InputError(
                f"edge motion: the flow must be (2, H, W) or (1, 2, H, W), not {shape}"
            )
        if not flow.is_floating_point():
            raise InputError(f"edge motion: the flow must be floating-point, not {flow.dtype}")
        f = flow.detach().to("cpu", torch.float32).reshape(1, 2, *flow.shape[-2:])
        if not bool(torch.isfinite(f).all()):
            raise InputError("edge motion: the flow contains NaN or infinite values")
        pooled = F.avg_pool2d(f, self.block, self.block, ceil_mode=True)
        return FlowMotion(pooled[0].contiguous(), self.block)

    def _flow_symbols(self, motion: FlowMotion) -> np.ndarray:
        """Integer symbols ``(2, hb, wb)`` of a coarse flow, validated."""
        f = motion.flow
        if (
            not isinstance(f, Tensor)
            or f.dim() != 3
            or f.shape[0] != 2
            or not f.is_floating_point()
        ):
            shape = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise InputError(f"edge motion: a coarse flow must be a float (2, hb, wb), not {shape}")
        if motion.block != self.block:
            raise InputError(
                f"edge motion: a block-{motion.block} flow given to a block-{self.block} coder"
            )
        f = f.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(f).all()):
            raise InputError("edge motion: the coarse flow contains NaN or infinite values")
        rounded = torch.round(f / self.step)
        limit = self._symbol_limit(f.shape[1], f.shape[2])
        if float(rounded.abs().max()) > limit:
            raise InputError(
                f"edge motion: a coarse flow of {float(f.abs().max()):.3g} px exceeds the "
                f"{limit * self.step:.1f} px limit"
            )
        return rounded.numpy().astype(np.int64)

    def _symbol_limit(self, hb: int, wb: int) -> int:
        extent = FLOW_LIMIT_EXTENTS * self.block * max(hb, wb)
        return min(math.floor(extent / self.step), MAX_SYMBOL)

    def _flow_from_symbols(self, q: np.ndarray) -> FlowMotion:
        flow = torch.from_numpy(q.astype(np.float64) * self.step).to(torch.float32)
        return FlowMotion(flow.contiguous(), self.block)

    # -- affine --------------------------------------------------------------------------------

    def _affine_symbols(self, motion: AffineMotion) -> list[int]:
        th = motion.theta
        if not isinstance(th, Tensor) or tuple(th.shape) != (2, 3) or not th.is_floating_point():
            shape = tuple(th.shape) if isinstance(th, Tensor) else type(th).__name__
            raise InputError(f"edge motion: an affine theta must be a float (2, 3), not {shape}")
        a = th.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(a).all():
            raise InputError("edge motion: theta contains NaN or infinite values")
        linear = a[:, :2] - np.eye(2)
        if np.abs(linear).max() > 2 * MAX_LINEAR or np.abs(a[:, 2]).max() > 2 * MAX_TRANSLATION:
            raise InputError(_AFFINE_RANGE)
        q = np.round(linear / self.affine_step).reshape(-1).tolist()
        q += np.round(a[:, 2] / self.translation_step).tolist()
        q = [int(v) for v in q]
        if self._affine_values(q) is None:
            raise InputError(_AFFINE_RANGE)
        return q

    def _affine_values(self, q: list[int]) -> np.ndarray | None:
        """theta (2, 3) float64 of the symbols ``q``, None when out of range."""
        delta = np.array(q[:4], dtype=np.float64).reshape(2, 2) * self.affine_step
        shift = np.array(q[4:], dtype=np.float64).reshape(2, 1) * self.translation_step
        if np.abs(delta).max() > MAX_LINEAR or np.abs(shift).max() > MAX_TRANSLATION:
            return None
        return np.concatenate([delta + np.eye(2), shift], axis=1)

    def _affine_from_symbols(self, q: list[int]) -> AffineMotion:
        theta = self._affine_values(q)
        if theta is None:
            raise BitstreamError("motion side information: the affine is out of range")
        return AffineMotion(torch.from_numpy(theta).to(torch.float32))

    # -- public coding API -------------------------------------------------------------------

    def quantize(self, motion: Motion) -> Motion:
        """The motion exactly as :meth:`decode` will return it (float32, CPU): the encoder must
        predict from this, not from ``motion``."""
        if isinstance(motion, AffineMotion):
            return self._affine_from_symbols(self._affine_symbols(motion))
        if isinstance(motion, FlowMotion):
            return self._flow_from_symbols(self._flow_symbols(motion))
        raise InputError(f"edge motion: cannot code a {type(motion).__name__}")

    def encode(self, motion: Motion) -> bytes:
        """The side-information payload of ``motion`` (see the module docstring)."""
        if isinstance(motion, AffineMotion):
            q = self._affine_symbols(motion)
            return bytes([KIND_AFFINE]) + b"".join(varint(zigzag(v)) for v in q)
        if isinstance(motion, FlowMotion):
            return self._encode_flow(self._flow_symbols(motion))
        raise InputError(f"edge motion: cannot code a {type(motion).__name__}")

    def decode(self, payload: bytes, input_size: tuple[int, int]) -> Motion:
        """Inverse of :meth:`encode` for an input of ``input_size`` ``(H, W)``; anything
        malformed raises :class:`~codec.errors.BitstreamError`."""
        grid = self.grid(input_size)
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise InputError(f"edge motion: a payload must be bytes, not {type(payload).__name__}")
        reader = _PayloadReader(bytes(payload))
        kind = reader.u8("kind")
        if kind == KIND_AFFINE:
            names = ("a00", "a01", "a10", "a11", "tx", "ty")
            q = [reader.signed(f"affine {n}") for n in names]
            if reader.pos != len(reader.data):
                extra = len(reader.data) - reader.pos
                raise BitstreamError(
                    f"motion side information: {extra} trailing bytes after the affine"
                )
            return self._affine_from_symbols(q)
        if kind == KIND_FLOW:
            return self._flow_from_symbols(self._decode_flow(reader, grid))
        raise BitstreamError(f"motion side information: unknown motion kind {kind}")

    # -- coarse-flow payload -----------------------------------------------------------------

    def _choose(self, q: np.ndarray) -> tuple[int, int, np.ndarray]:
        """Mode byte, centre and residuals of one channel ``q`` (hb, wb)."""
        median = int(np.round(np.median(q)))
        if (q == median).all():
            return MODE_CONSTANT, median, np.zeros_like(q)
        centres = sorted({median, int(np.round(q.mean()))})
        candidates = [(0, c, q - c) for c in centres]
        origin = int(q[0, 0])
        candidates.append((MODE_GRADIENT, origin, _gradient_residuals(q, origin)))
        best: tuple[float, int, int, np.ndarray] | None = None
        for predictor, centre, r in candidates:
            bits = _bits(r, np.array(_SCALES))
            k = int(np.argmin(bits))
            cost = float(bits[k]) + 8 * len(varint(zigzag(centre)))
            if best is None or cost < best[0]:
                best = (cost, predictor + k, centre, r)
        assert best is not None
        return best[1], best[2], best[3]

    def _code_residuals(self, residuals: list[np.ndarray], modes: list[int]) -> bytes:
        r = torch.from_numpy(np.stack(residuals)).to(torch.float64).unsqueeze(0)
        scales = self._scales(modes, r.shape[-2:])
        return self.gaussian.encode(r, scales, torch.zeros_like(scales))[0]

    @staticmethod
    def _scales(modes: list[int], size: tuple[int, ...]) -> Tensor:
        sigma = torch.tensor([_SCALES[m % MODE_GRADIENT] for m in modes], dtype=torch.float32)
        return sigma.view(1, -1, 1, 1).expand(1, len(modes), *size).contiguous().double()

    def _encode_flow(self, q: np.ndarray) -> bytes:
        head = bytearray([KIND_FLOW, _grid_check(q.shape[1], q.shape[2])])
        residuals, modes = [], []
        for channel in q:
            mode, centre, r = self._choose(channel)
            head.append(mode)
            head += varint(zigzag(centre))
            if mode != MODE_CONSTANT:
                residuals.append(r)
                modes.append(mode)
        if not residuals:
            return bytes(head)
        return bytes(head) + self._code_residuals(residuals, modes)

    def _decode_flow(self, reader: _PayloadReader, grid: tuple[int, int]) -> np.ndarray:
        hb, wb = grid
        check = reader.u8("grid check")
        if check != _grid_check(hb, wb):
            raise BitstreamError(
                f"motion side information: the coarse flow's grid does not match the "
                f"{hb}×{wb} grid of the input"
            )
        limit = self._symbol_limit(hb, wb)
        header = []
        for axis in "xy":
            mode = reader.u8(f"{axis} mode")
            if not _valid_mode(mode):
                raise BitstreamError(f"motion side information: invalid {axis} channel mode {mode}")
            centre = reader.signed(f"{axis} centre")
            if abs(centre) > limit:
                raise BitstreamError(
                    f"motion side information: the {axis} centre {centre} is absurd"
                )
            header.append((mode, centre))
        data = reader.rest()
        coded = [m for m, _ in header if m != MODE_CONSTANT]
        if not coded:
            if data:
                raise BitstreamError(
                    f"motion side information: {len(data)} trailing bytes after a constant flow"
                )
            return np.stack([np.full((hb, wb), c, dtype=np.int64) for _, c in header])
        if len(data) < 8 or len(data) % 4:
            raise BitstreamError(f"motion side information: {len(data)} bytes are not rANS data")
        scales = self._scales(coded, (hb, wb))
        try:
            r = self.gaussian.decode([data], scales, torch.zeros_like(scales))[0]
        except BitstreamError as e:
            raise BitstreamError(f"motion side information: coarse-flow residuals: {e}") from None
        r = r.to(torch.int64).numpy()
        if np.abs(r).max() > 4 * limit:
            raise BitstreamError("motion side information: absurd coarse-flow residuals")
        if self._code_residuals(list(r), coded) != data:
            raise BitstreamError("motion side information: corrupt or truncated coarse-flow data")
        channels, rows = [], iter(r)
        for mode, centre in header:
            if mode == MODE_CONSTANT:
                channels.append(np.full((hb, wb), centre, dtype=np.int64))
            elif mode >= MODE_GRADIENT:
                channels.append(_gradient_inverse(next(rows), centre))
            else:
                channels.append(next(rows) + centre)
        q = np.stack(channels)
        if np.abs(q).max() > limit:
            raise BitstreamError("motion side information: the coarse flow is out of range")
        return q
