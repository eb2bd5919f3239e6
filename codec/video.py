"""Inter-frame coding of feature tensors: I-frames and motion-compensated P-frames.

A P-frame's tensor is mostly the previous tensor, moved (:mod:`codec.motion`). The server
predicts it from the last tensor it *decoded*, with the input motion the edge found and sent
as side information (:mod:`codec.motion_estimation`, :mod:`codec.motion_side_info`), and only
the unpredictable part costs bits::

    frame 0 (I):  x₀ ─front─▶ F₀ ─ intra codec (the base layer) ─▶ bits ─▶ F̂₀
    frame t (P):  motion v_t (metadata affine, or DIS flow of x_{t−1} → x_t) ─▶ side info
                  F̃_t, mask = warp(F̂_{t−1}, ṽ_t),  ṽ_t = v_t(s·x, s·y)/s
                  x_t ─front─▶ F_t ─ g_a(F_t, F̃_t) ─▶ Y ─▶ Z ─▶ bits
                  (μ, σ) = e(h_s(Ẑ), c(F̃_t, mask));   F̂_t = F̃_t + g_s(Ŷ, c'(F̃_t, mask))

The P-frame network is :class:`~codec.pframe.PFrameCodec` (conditional coding by default, or
the residual: settled by measuring both, README "Video"); the stream layout is
:mod:`codec.sequence`. A sequence is one ``.fcb`` stream: every section carries its frame
index, an I-frame has ``hyper`` and ``base`` sections (decodable by the intra codec alone), a
P-frame one ``inter`` section: its motion side information, then one rANS string of ``Ẑ``
and ``Ŷ`` (each section record and
each rANS flush cost 7–8 bytes, which at these rates matters). A corrupt frame is reported by
index, and decoding can resume at the next I-frame (:meth:`VideoCodec.decode_sequence`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from featcodec.codec.bitstream import (
    MAX_FRAME,
    Section,
    SectionKind,
    ShapeTag,
    Stream,
    join_prefixed,
    pack,
    split_prefixed,
    unpack,
)
from featcodec.codec.checkpoint import checkpoint_entry, load_checkpoint, rebuild, save_checkpoint
from featcodec.codec.coding_mode import EXACT, header_fields
from featcodec.codec.config import MotionConfig, PFrameConfig, as_dict, parse_section
from featcodec.codec.errors import BitstreamError, CheckpointError, InputError
from featcodec.codec.exact import from_fixed, supports_exact, to_fixed
from featcodec.codec.facade import Codec, check_shapes
from featcodec.codec.fingerprint import Stamp, canonical_state, version_stamp, weights_digest
from featcodec.codec.latent_motion import latent_motion
from featcodec.codec.motion import exact_warp, warp
from featcodec.codec.motion_estimation import estimate_flow, global_affine
from featcodec.codec.motion_side_info import AffineMotion, FlowMotion, Motion, MotionCoder
from featcodec.codec.pframe import PFrameCodec
from featcodec.codec.sequence import (
    KIND_NAMES,
    MOTION_SOURCES,
    check_layout,
    check_rans_payload,
    frame_kinds,
)

# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------


@dataclass
class DecodedFrame:
    """One decoded frame: ``kind`` "I" or "P", features ``(1, C, h, w)``, the task output,
    and the frame's bytes in the stream (for a P-frame, ``motion_bytes`` of them are side
    information)."""

    index: int
    kind: str
    features: Tensor
    output: Any
    bytes: int
    motion_bytes: int = 0


@dataclass
class DecodedSequence:
    """Every frame of a stream in order; a frame that could not be decoded is ``None`` and
    ``errors`` says why (only with ``on_error="resume"``)."""

    frames: list[DecodedFrame | None]
    stream: Stream
    errors: dict[int, str] = field(default_factory=dict)


class VideoCodec(nn.Module):
    """I-frames through the intra :class:`~codec.facade.Codec` (the base layer, frozen),
    P-frames through :class:`PFrameCodec` with motion side information.

    Args:
        intra: the intra codec (task network split + base layer).
        inter: architecture of the P-frame codec (:class:`~codec.config.PFrameConfig` keys).
        motion: side-information settings (``block``, ``step``; see
            :class:`codec.motion_side_info.MotionCoder`).
    """

    def __init__(
        self,
        intra: Codec,
        inter: dict[str, Any] | None = None,
        motion: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.inter_arch = as_dict(parse_section(PFrameConfig, inter, "inter"))
        refine = self.inter_arch["refine"]
        if refine % 2 == 0:  # stored only when used: the architectures before it hash alike
            if refine:
                raise CheckpointError(f"inter: refine = {refine} is not 0 or an odd size")
            del self.inter_arch["refine"]
        self.motion_arch = as_dict(parse_section(MotionConfig, motion, "motion"))
        self.intra = intra
        for p in intra.parameters():
            p.requires_grad_(False)
        self.inter = PFrameCodec(intra.channels, **self.inter_arch)
        self.coder = MotionCoder(**self.motion_arch)
        self.stride = intra.stride
        self.channels = intra.channels
        self.coding = EXACT
        """How :meth:`encode_sequence` codes latents (see :attr:`Codec.coding`)."""
        self._fingerprint: tuple[Stamp, bytes] | None = None
        self._exact_reference: bool | None = None
        self.train()

    @property
    def arch(self) -> dict[str, Any]:
        return {
            "intra": copy.deepcopy(self.intra.arch),
            "inter": dict(self.inter_arch),
            "motion": dict(self.motion_arch),
        }

    def train(self, mode: bool = True) -> VideoCodec:
        super().train(mode)
        self.intra.eval()
        return self

    @property
    def fingerprint(self) -> bytes:
        """Hash of the whole model (the intra codec's architecture and weights included),
        recomputed only when a tensor was replaced or modified in place (its version counter:
        hashing every weight took ~70 ms per decode with a ResNet front)."""
        tensors = self.state_dict(keep_vars=True)
        stamp = version_stamp(tensors.values())
        if self._fingerprint is None or self._fingerprint[0] != stamp:
            digest = weights_digest(self.arch, canonical_state(self, tensors))
            self._fingerprint = (stamp, digest)
        return self._fingerprint[1]

    @property
    def _device(self) -> torch.device:
        return next(self.inter.parameters()).device

    # motion ---------------------------------------------------------------------------------

    def edge_motion(
        self,
        source: str,
        reference: Tensor,
        target: Tensor,
        flow: Tensor | None = None,
        theta: Tensor | None = None,
    ) -> Motion:
        """The motion of frame ``target`` (3, H, W) from ``reference`` as the edge sends it
        (quantized). ``flow`` (2, H, W) / ``theta`` (2, 3) are the caller's known motion for
        the sources "flow" / "affine"."""
        if source not in MOTION_SOURCES:
            raise InputError(f"unknown motion source {source!r}; expected one of {MOTION_SOURCES}")
        if source == "flow":
            if flow is None:
                raise InputError("motion source 'flow' needs the frames' flow")
            motion: Motion = self.coder.coarse(flow.detach().float().cpu())
        elif source == "affine":
            if theta is None:
                raise InputError("motion source 'affine' needs the frames' affine transforms")
            motion = AffineMotion(theta.detach().float().cpu().reshape(2, 3))
        elif source == "none":
            motion = AffineMotion(torch.eye(2, 3))
        else:
            dense = estimate_flow(reference.detach().cpu(), target.detach().cpu())
            if source == "dis-flow":
                motion = self.coder.coarse(dense[0])
            else:
                motion = AffineMotion(global_affine(dense)[0])
        return self.coder.quantize(motion)

    def predict(
        self, reference: Tensor, motion: Motion | Sequence[Motion], input_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Warp the decoded ``reference`` (B, C, h, w) with ``motion`` (one per batch element;
        a single one for B = 1): prediction (refined when the P-frame codec has a filter
        bank) and mask, in one warp."""
        size = tuple(reference.shape[-2:])
        motions = [motion] if isinstance(motion, AffineMotion | FlowMotion) else motion
        flow = torch.cat([latent_motion(m, self.stride, size, input_size) for m in motions])
        flow = flow.to(reference)
        prediction, mask = warp(reference, flow, check=False)
        return self.inter.refined(prediction, flow), mask

    def predict_fixed(
        self, reference_q: Tensor, motion: Motion, input_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """:meth:`predict` in fixed point (:func:`codec.motion.exact_warp`), for a video coded
        with device-exact parameters: the same integers on every device."""
        size = tuple(reference_q.shape[-2:])
        flow = latent_motion(motion, self.stride, size, input_size)
        prediction_q, mask = exact_warp(reference_q, flow)
        return self.inter.refined_fixed(prediction_q, flow), mask

    @property
    def exact_reference(self) -> bool:
        """Whether the prediction path (the intra synthesis, the P-frame synthesis and
        context network) can run in fixed point (:mod:`codec.exact`): then a video coded with
        :data:`~codec.coding_mode.EXACT` predicts from fixed-point references and every
        device decodes it alike. Every featcodec architecture can; a network with a layer
        that has no fixed-point version would predict in float, and a device that rounds
        otherwise would be refused by the check."""
        if self._exact_reference is None:
            nets = [self.intra.base.g_s, self.inter.g_s, self.inter.g_out]
            if self.inter.context_params is not None:
                nets.append(self.inter.context_params)
            if self.inter.refine is not None:
                nets.append(self.inter.refine.conv)
            self._exact_reference = all(supports_exact(n) for n in nets)
        return self._exact_reference

    def _intra_reference(self, y_hat: Tensor, size: tuple[int, int], fixed: bool) -> Tensor:
        """An I-frame's reconstruction from its ``Ŷ``: fixed point when ``fixed``."""
        h, w = size
        if fixed:
            return self.intra.base.exact("g_s")(to_fixed(y_hat))[..., :h, :w]
        return self.intra.base.g_s(y_hat)[..., :h, :w]

    # coding ---------------------------------------------------------------------------------

    def _frames(self, frames: Tensor | Sequence[Tensor]) -> list[Tensor]:
        items = list(frames) if not isinstance(frames, Tensor) else list(frames.unbind(0))
        if not items:
            raise InputError("a sequence needs at least one frame")
        if len(items) > MAX_FRAME + 1:
            raise InputError(f"a sequence holds at most {MAX_FRAME + 1} frames, not {len(items)}")
        first = tuple(items[0].shape)
        out = []
        for t, x in enumerate(items):
            if tuple(x.shape) != first:
                raise InputError(
                    f"frame {t} has shape {tuple(x.shape)}, frame 0 {first}: every frame of a "
                    "sequence must have the same size"
                )
            out.append(self.intra.check_input(x, 3, f"frame {t}", unit_range=True))
        return out

    @torch.no_grad()
    def encode_sequence(
        self,
        frames: Tensor | Sequence[Tensor],
        intra_period: int = 8,
        motion: str = "dis-flow",
        flows: Tensor | None = None,
        affines: Tensor | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> bytes:
        """Code frames (T, 3, H, W) in [0, 1] into one stream: frame ``t`` is an I-frame when
        ``t % intra_period == 0``, else a P-frame predicted from frame ``t − 1`` as decoded.

        ``motion`` is one of :data:`codec.sequence.MOTION_SOURCES`; ``flows`` (T, 2, H, W) /
        ``affines`` (T, 2, 3) give frame ``t``'s backward motion to frame ``t − 1`` for "flow" /
        "affine". ``progress`` is called with each frame index once it is coded.
        """
        if isinstance(intra_period, bool) or not isinstance(intra_period, int) or intra_period < 1:
            raise InputError(f"the intra period must be an integer ≥ 1, not {intra_period!r}")
        xs = self._frames(frames)
        for name, given, want in (("flows", flows, "flow"), ("affines", affines, "affine")):
            if motion == want and (given is None or len(given) != len(xs)):
                n = "none" if given is None else len(given)
                raise InputError(f"motion {want!r} needs {name} for all {len(xs)} frames ({n})")
        device = self._device
        H, W = xs[0].shape[-2:]
        sections: list[Section] = []
        reference: Tensor | None = None
        fixed = self.coding.exact and self.exact_reference
        for t, x in enumerate(xs):
            f = self.intra.features(x.to(device))
            if t % intra_period == 0:
                code = self.intra.base.compress(f, self.coding)
                sections += [
                    Section(SectionKind.HYPER, code.z[0], t),
                    Section(SectionKind.BASE, code.y[0], t),
                ]
                reference = self._intra_reference(code.y_hat, tuple(f.shape[-2:]), fixed)
            else:
                assert reference is not None
                m = self.edge_motion(
                    motion,
                    xs[t - 1][0],
                    x[0],
                    None if flows is None else flows[t],
                    None if affines is None else affines[t],
                )
                if fixed:
                    prediction, mask = self.predict_fixed(reference, m, (H, W))
                    pcode = self.inter.compress_fixed(f, prediction, mask)
                else:
                    prediction, mask = self.predict(reference, m, (H, W))
                    pcode = self.inter.compress(f, prediction, mask, self.coding)
                payload = join_prefixed(self.coder.encode(m), pcode.strings[0])
                sections.append(Section(SectionKind.INTER, payload, t))
                reference = pcode.features_hat
            if progress is not None:
                progress(t)
        shapes = {ShapeTag.INPUT: (3, H, W), ShapeTag.FEATURES: tuple(f.shape[1:])}
        version, flags = header_fields(self.coding)
        return pack(Stream(self.fingerprint, shapes, tuple(sections), version, flags))

    def check_stream(self, stream: Stream) -> tuple[int, int]:
        """Raise :class:`BitstreamError` unless this model can decode ``stream``."""
        if stream.fingerprint != self.fingerprint:
            raise BitstreamError(
                f"stream was written by model {stream.fingerprint.hex()}, "
                f"this checkpoint is {self.fingerprint.hex()}"
            )
        check_layout(stream)
        h, w = check_shapes(stream, self.channels, self.stride)
        if any(s.kind in (SectionKind.HYPER_ENH, SectionKind.ENH) for s in stream.sections):
            raise BitstreamError("a sequence stream cannot carry enhancement sections")
        return h, w

    def _decode_frame(
        self,
        stream: Stream,
        t: int,
        kind: str,
        reference: Tensor | None,
        size: tuple[int, int],
        fixed: bool,
    ) -> tuple[Tensor, int]:
        """Decode frame ``t``: its reconstruction (fixed point when ``fixed``: the next frame's
        reference) and motion bytes; BitstreamError names the frame."""
        try:
            if kind == "I":
                y, z = stream.section(SectionKind.BASE, t), stream.section(SectionKind.HYPER, t)
                for k, payload in ((SectionKind.HYPER, z), (SectionKind.BASE, y)):
                    check_rans_payload(k, payload)
                base = self.intra.base
                y_hat = base.latent_decompress([y], [z], base.hyper_size(*size), mode=stream.mode)
                return self._intra_reference(y_hat, size, fixed), 0
            if reference is None:
                raise BitstreamError("a P-frame without a decoded frame before it to predict from")
            side, string = split_prefixed(stream.section(SectionKind.INTER, t), "motion")
            check_rans_payload(SectionKind.INTER, string)
            _, H, W = stream.shape(ShapeTag.INPUT)
            motion = self.coder.decode(side, (H, W))
            if fixed:
                prediction, mask = self.predict_fixed(reference, motion, (H, W))
                return self.inter.decompress_fixed([string], prediction, mask), len(side)
            prediction, mask = self.predict(reference, motion, (H, W))
            return self.inter.decompress([string], prediction, mask, stream.mode), len(side)
        except BitstreamError as e:
            raise BitstreamError(f"frame {t} ({KIND_NAMES[kind]}): {e}") from None

    @torch.no_grad()
    def decode_sequence(
        self,
        data: bytes | Stream,
        on_error: str = "raise",
        progress: Callable[[int], None] | None = None,
    ) -> DecodedSequence:
        """Decode every frame of a sequence stream.

        ``on_error="raise"`` stops at the first frame that cannot be decoded with a
        :class:`BitstreamError` naming it; ``"resume"`` records the error, leaves that frame
        and the P-frames that depend on it ``None``, and resumes at the next I-frame.
        """
        if on_error not in ("raise", "resume"):
            raise InputError(f"on_error must be 'raise' or 'resume', not {on_error!r}")
        stream = unpack(data, corrupt="mark") if isinstance(data, bytes | bytearray) else data
        size = self.check_stream(stream)
        fixed = stream.mode.exact and self.exact_reference
        kinds = frame_kinds(stream)
        sizes = stream.frame_bytes()
        frames: list[DecodedFrame | None] = []
        errors: dict[int, str] = {}
        reference: Tensor | None = None
        for t, kind in enumerate(kinds):
            if kind == "P" and t > 0 and frames[t - 1] is None:
                frames.append(None)  # its reference was lost: skip to the next I-frame
                continue
            try:
                if t in stream.corrupt:
                    raise BitstreamError(
                        f"frame {t} ({KIND_NAMES[kind]}): a section failed its CRC-32 check "
                        "(corrupt data)"
                    )
                decoded, motion_bytes = self._decode_frame(stream, t, kind, reference, size, fixed)
            except BitstreamError as e:
                later = [k for k in range(t + 1, len(kinds)) if kinds[k] == "I"]
                where = f"frame {later[0]}" if later else "no later I-frame"
                if on_error == "raise":
                    raise BitstreamError(
                        f"{e} (decoding can resume at the next I-frame, {where}: "
                        "on_error='resume', featcodec decode --resume)"
                    ) from None
                errors[t] = f"{e}; resuming at the next I-frame ({where})"
                frames.append(None)
                reference = None
                continue
            reference = decoded
            features = from_fixed(decoded) if fixed else decoded
            frames.append(
                DecodedFrame(
                    t, kind, features, self.intra.back(features), sizes.get(t, 0), motion_bytes
                )
            )
            if progress is not None:
                progress(t)
        for t, frame in enumerate(frames):  # P-frames after a lost frame had no reference
            if frame is None and t not in errors:
                errors[t] = f"frame {t} (P-frame): skipped, its reference frame was lost"
        return DecodedSequence(frames, stream, errors)

    # checkpoints ----------------------------------------------------------------------------

    def checkpoint_entry(self, state_prefix: str) -> dict[str, Any]:
        """The ``featcodec`` entry that makes a checkpoint loadable by :meth:`from_checkpoint`."""
        return checkpoint_entry("video", self.arch, state_prefix)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a standalone checkpoint."""
        save_checkpoint(self, path)

    @classmethod
    def build(cls, arch: dict[str, Any]) -> VideoCodec:
        """A video codec with fresh weights from its architecture (``arch`` property)."""
        return cls(Codec.build(arch["intra"]), arch["inter"], arch["motion"])

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> VideoCodec:
        """Rebuild a video codec from a checkpoint alone."""
        return rebuild(path, load_checkpoint(path, kind="video"), cls.build)
