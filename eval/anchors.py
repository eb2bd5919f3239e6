"""Classical anchors: feature tensors coded with image/video codecs and lossless compressors.

The baseline of the feature-coding literature (Choi & Bajić's tiling + HEVC, the MPEG VCM
anchors): each tensor ``(C, h, w)`` is min–max quantized to ``b`` bits with its own range,
its channels are laid out as a near-square 2-D mosaic, and the mosaic is coded as a grey
image (x265 all-intra, JPEG, JPEG 2000, AVIF). The quantize + lossless anchors (zstd, zlib)
compress the integers without a mosaic.

Each tensor becomes one standalone byte string: an 18-byte header, then the codec's payload.
Header (little-endian ``<BHHHBffH``): anchor tag u8; C, h, w u16; bit depth u8; the
tensor's min and max f32; the low 16 bits of the CRC-32 of the fields before it and the
payload. The check (2 bytes) is there because ffmpeg decodes an HEVC stream cut inside its
slice data without an error, and JPEG 2000 is truncatable by design: with it, truncated or
corrupted bytes raise :class:`~codec.errors.InputError` for every anchor.
"""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch
from PIL import Image
from PIL import features as pil_features
from torch import Tensor

from featcodec.codec.errors import InputError

try:
    import zstandard
except ImportError:  # the zstd anchor then reports itself unavailable
    zstandard = None

HEADER = struct.Struct("<BHHHBffH")  # 18 bytes
PARAMETER_SETS = {32, 33, 34}  # HEVC NAL unit types VPS, SPS, PPS
AU_OPENERS = {32, 33, 34, 35, 39}  # and AUD, prefix SEI: each opens an access unit after a slice


def grid(C: int) -> tuple[int, int]:
    """(rows, cols) of the near-square mosaic of ``C`` channels: cols = ⌈√C⌉."""
    cols = math.ceil(math.sqrt(C))
    return math.ceil(C / cols), cols


def tile(f: Tensor, fill: float | Tensor | None = None) -> Tensor:
    """Lay the channels of ``f`` (B, C, h, w) out row-major as mosaics (B, rows·h, cols·w).

    Empty cells take ``fill``, by default each tensor's own minimum (so after min–max
    quantization they are 0, the cheapest value for every codec here).
    """
    B, C, h, w = f.shape
    rows, cols = grid(C)
    fill = f.reshape(B, -1).amin(dim=1) if fill is None else fill
    pad = torch.as_tensor(fill, dtype=f.dtype).reshape(-1, 1, 1, 1)
    cells = torch.cat([f, pad.expand(B, rows * cols - C, h, w)], dim=1)
    return cells.reshape(B, rows, cols, h, w).permute(0, 1, 3, 2, 4).reshape(B, rows * h, -1)


def untile(mosaic: Tensor, C: int, h: int, w: int) -> Tensor:
    """Invert :func:`tile` exactly: mosaics (B, rows·h, cols·w) → tensors (B, C, h, w)."""
    rows, cols = grid(C)
    if tuple(mosaic.shape[1:]) != (rows * h, cols * w):
        raise InputError(f"a {tuple(mosaic.shape[1:])} mosaic does not hold {C}×{h}×{w}")
    cells = mosaic.reshape(-1, rows, h, cols, w).permute(0, 1, 3, 2, 4)
    return cells.reshape(-1, rows * cols, h, w)[:, :C]


def quantize(f: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Min–max quantize each tensor of ``f`` (B, ...) over all its elements to ``bits``.

    q = round((f − min) / (max − min) · (2^bits − 1)); a constant tensor gives q = 0.
    Returns q (B, ...) int64, min (B,) and max (B,) float32.
    """
    flat = f.detach().float().reshape(f.shape[0], -1)
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    span = (hi.double() - lo.double())[:, None]
    levels = (1 << bits) - 1
    x = (flat.double() - lo.double()[:, None]) / torch.where(span > 0, span, 1.0) * levels
    return x.round().clamp(0, levels).long().reshape(f.shape), lo, hi


def dequantize(q: Tensor, lo: Tensor, hi: Tensor, bits: int) -> Tensor:
    """Invert :func:`quantize`: q (B, ...) → float32 (B, ...), within half a step."""
    shape = (-1,) + (1,) * (q.dim() - 1)
    step = (hi.double() - lo.double()) / ((1 << bits) - 1)
    return (lo.double().reshape(shape) + q.double() * step.reshape(shape)).float()


class Anchor(ABC):
    """A classical codec of feature tensors (B, C, h, w): one standalone byte string each.
    ``settings`` are swept to draw a curve, from the highest rate to the lowest, within
    ``setting_range``; ``bit_depth`` is the quantizer's (the setting when it is "bits")."""

    name: str
    tag: int
    setting_name: str
    settings: tuple
    setting_range: tuple[float, float]
    bit_depth: int

    def __init__(self, settings: tuple | None = None) -> None:
        self.settings = tuple(type(self).settings if settings is None else settings)

    @classmethod
    def available(cls) -> str | None:
        """None when the anchor can run here, else a one-line reason."""
        return None

    def config(self) -> dict[str, Any]:
        """A JSON-serializable description for results files."""
        return {"name": self.name, "bit_depth": self.bit_depth, "setting_name": self.setting_name,
                "settings": list(self.settings), "header_bytes": HEADER.size}  # fmt: skip

    @abstractmethod
    def encode_ints(self, q: Tensor, setting: Any) -> list[bytes]:
        """Payloads of quantized tensors ``q`` (B, C, h, w) int64, one per tensor."""

    @abstractmethod
    def decode_ints(self, payloads: list[bytes], shape: tuple[int, int, int], bits: int) -> Tensor:
        """Quantized tensors (B, C, h, w) int64 from payloads; InputError on bad ones."""

    def encode(self, features: Tensor, setting: Any) -> list[bytes]:
        """Code ``features`` (B, C, h, w) at ``setting``: one standalone byte string each."""
        if not isinstance(features, Tensor) or features.dim() != 4:
            raise InputError(f"{self.name}: features must be a (B, C, h, w) tensor")
        if not features.is_floating_point() or not torch.isfinite(features).all():
            raise InputError(f"{self.name}: features must be finite floating-point values")
        if not all(1 <= n <= 0xFFFF for n in features.shape[1:]):
            raise InputError(f"{self.name}: C, h and w must lie in 1..65535")
        lo, hi = self.setting_range
        kind = "an integer" if isinstance(lo, int) else "a number"
        ok = isinstance(setting, int if isinstance(lo, int) else int | float)
        if isinstance(setting, bool) or not ok or not lo <= setting <= hi:
            raise InputError(f"{self.name}: {self.setting_name} must be {kind} in {lo}..{hi}")
        if (reason := self.available()) is not None:
            raise InputError(f"{self.name}: {reason}")
        if features.shape[0] == 0:
            return []
        bits = int(setting) if self.setting_name == "bits" else self.bit_depth
        q, mins, maxs = quantize(features.cpu(), bits)
        out = []
        for p, a, b in zip(self.encode_ints(q, setting), mins.tolist(), maxs.tolist(), strict=True):
            head = HEADER.pack(self.tag, *features.shape[1:], bits, a, b, 0)[:-2]
            out.append(head + struct.pack("<H", zlib.crc32(p, zlib.crc32(head)) & 0xFFFF) + p)
        return out

    def decode(self, streams: list[bytes]) -> Tensor:
        """Decode byte strings from :meth:`encode` (one shape) into float32 (B, C, h, w)."""
        if not streams:
            raise InputError(f"{self.name}: no streams to decode")
        heads = []
        for i, s in enumerate(streams):
            if not isinstance(s, bytes | bytearray) or len(s) <= HEADER.size:
                raise InputError(f"{self.name}: stream {i} is too short to hold a header")
            head = HEADER.unpack_from(s)
            if head[0] != self.tag:
                raise InputError(f"{self.name}: stream {i} was not written by this anchor")
            if zlib.crc32(s[HEADER.size :], zlib.crc32(s[: HEADER.size - 2])) & 0xFFFF != head[7]:
                raise InputError(f"{self.name}: stream {i} is truncated or corrupted")
            _, C, h, w, bits, lo, hi, _ = head
            ok_bits = 1 <= bits <= 16 if self.setting_name == "bits" else bits == self.bit_depth
            if min(C, h, w) < 1 or not ok_bits or not -math.inf < lo <= hi < math.inf:
                raise InputError(f"{self.name}: stream {i} has an invalid header")
            if heads and head[1:5] != heads[0][1:5]:
                raise InputError(f"{self.name}: the streams of one call must share C, h, w, bits")
            heads.append(head)
        C, h, w, bits = heads[0][1:5]
        q = self.decode_ints([bytes(s[HEADER.size :]) for s in streams], (C, h, w), bits)
        mins, maxs = (torch.tensor([hd[k] for hd in heads], dtype=torch.float32) for k in (5, 6))
        return dequantize(q.clamp(0, (1 << bits) - 1), mins, maxs, bits)


def _ffmpeg(args: str, data: bytes, what: str) -> bytes:
    """Run ffmpeg with ``args`` (split on spaces) and ``data`` on stdin; its stdout, or
    InputError with its last stderr line."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *args.split()]
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise InputError(f"ffmpeg {what} failed (exit {proc.returncode}): {lines[-1].strip()}")
    return proc.stdout


@lru_cache(maxsize=8)
def _x265_help(ffmpeg: str) -> str:
    """``ffmpeg -h encoder=libx265`` of one ffmpeg binary (it lists the pixel formats)."""
    try:
        cmd = [ffmpeg, "-hide_banner", "-h", "encoder=libx265"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def access_units(stream: bytes) -> list[tuple[bytes, set[int]]]:
    """Split an Annex-B HEVC stream into access units, each with its NAL unit types. A unit
    opens at a VPS, SPS, PPS, AUD or prefix SEI, or at a slice with
    first_slice_segment_in_pic_flag, after a slice; it includes its leading zero bytes."""
    units: list[tuple[int, set[int]]] = []
    has_slice, i, last = False, stream.find(b"\x00\x00\x01"), -1
    while 0 <= i < len(stream) - 3:
        kind = (stream[i + 3] >> 1) & 0x3F
        first = kind < 32 and i + 5 < len(stream) and stream[i + 5] >> 7 == 1
        if not units or (has_slice and (kind in AU_OPENERS or first)):
            start = i
            while units and start > last + 5 and stream[start - 1] == 0:
                start -= 1  # the zero bytes before a start code belong to the new unit
            units.append((start if units else 0, set()))
            has_slice = False
        units[-1][1].add(kind)
        has_slice |= kind < 32
        last, i = i, stream.find(b"\x00\x00\x01", i + 3)
    ends = [start for start, _ in units[1:]] + [len(stream)]
    return [(stream[a:b], kinds) for (a, kinds), b in zip(units, ends, strict=True)]


class X265Anchor(Anchor):
    """Tiling + HEVC: mosaic → 10/12-bit min–max quantization → ffmpeg/libx265, all-intra
    4:0:0 grey at constant QP. One encoder process per (batch, QP) codes the mosaics as the
    frames of one raw video, each an IDR with its own VPS/SPS/PPS (≈80 bytes), split into
    access units; one decoder process per :meth:`decode` runs on the joined streams.

    Measured with ffmpeg 5.1 / libx265 3.5: QP is clamped to 0..51, and at equal QP 10- and
    12-bit inputs get the same step, ≈2^((QP−4)/6) of an 8-bit level, so QP 0 (≈0.6 level) is
    the finest point. Default QPs 0..48 by 6 (each doubles the step) end at a nominal step of
    ~160 levels, where little more than each tile's mean survives. ``ipratio=1`` makes the
    slice QP the setting; AQ and psycho-visual tuning are off. x265 pads to its CU grid and
    signals the crop itself but refuses frames under 16×16: those are edge-padded to 16.
    """

    setting_name, setting_range, settings = "qp", (0, 51), (0, 6, 12, 18, 24, 30, 36, 42, 48)

    def __init__(self, bit_depth: int = 12, settings: tuple | None = None,
                 preset: str = "medium") -> None:  # fmt: skip
        if bit_depth not in (10, 12):
            raise InputError(f"x265 anchor: bit depth must be 10 or 12, not {bit_depth}")
        super().__init__(settings)
        self.bit_depth, self.preset, self.pix_fmt = bit_depth, preset, f"gray{bit_depth}le"
        self.name, self.tag = f"x265-{bit_depth}bit", 0xA0 + bit_depth
        # available() on an instance checks its own bit depth
        self.available = partial(X265Anchor.available, bit_depth)  # type: ignore[method-assign]

    @classmethod
    def available(cls, bit_depth: int = 12) -> str | None:
        if (ffmpeg := shutil.which("ffmpeg")) is None:
            return "ffmpeg not found on PATH (Debian: apt-get install ffmpeg)"
        if f"gray{bit_depth}le" not in _x265_help(ffmpeg):
            return f"ffmpeg has no libx265 encoder with gray{bit_depth}le"
        return None

    def x265_params(self, qp: Any) -> str:
        """The ``-x265-params`` of one QP."""
        return (f"qp={qp}:keyint=1:min-keyint=1:scenecut=0:bframes=0:repeat-headers=1:info=0:"
                "ipratio=1:aq-mode=0:psy-rd=0:psy-rdoq=0:log-level=error")  # fmt: skip

    def config(self) -> dict[str, Any]:
        return super().config() | {"preset": self.preset, "x265_params": self.x265_params("QP")}

    def _frame(self, C: int, h: int, w: int) -> tuple[int, int, int, int]:
        rows, cols = grid(C)
        return rows * h, cols * w, max(16, rows * h), max(16, cols * w)

    def encode_ints(self, q: Tensor, setting: Any) -> list[bytes]:
        H, W, Hp, Wp = self._frame(*q.shape[1:])
        # x265 sets slice_loop_filter_across_slices_enabled_flag (meaningless with one slice a
        # picture) of input frame k to bit k % 31 of 0x5F4E4A53: frames go where it is 1, as
        # for frame 0, blank frames fill the other slots, so batch bytes equal bytes alone.
        slots = [k for k in range(2 * q.shape[0] + 31) if 0x5F4E4A53 >> (k % 31) & 1]
        slots = slots[: q.shape[0]]
        frames = np.zeros((slots[-1] + 1, Hp, Wp), dtype="<u2")
        frames[slots] = np.pad(tile(q).numpy(), ((0, 0), (0, Hp - H), (0, Wp - W)), mode="edge")
        args = (f"-f rawvideo -pix_fmt {self.pix_fmt} -s {Wp}x{Hp} -r 25 -i pipe: -c:v libx265 "
                f"-preset {self.preset} -pix_fmt {self.pix_fmt} "
                f"-x265-params {self.x265_params(setting)} -f hevc pipe:")  # fmt: skip
        units = access_units(_ffmpeg(args, frames.tobytes(), "x265 encoding"))
        if len(units) != len(frames):
            raise InputError(f"{self.name}: x265 wrote {len(units)} frames for {len(frames)}")
        return [units[k][0] for k in slots]

    def decode_ints(self, payloads: list[bytes], shape: tuple[int, int, int], bits: int) -> Tensor:
        for i, p in enumerate(payloads):
            units = access_units(p)
            ok = p.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")) and len(units) == 1
            if not ok or not PARAMETER_SETS <= units[0][1] or not units[0][1] & {19, 20}:
                raise InputError(f"{self.name}: stream {i} is not one standalone HEVC IDR frame")
        if (reason := self.available()) is not None:
            raise InputError(f"{self.name}: {reason}")
        H, W, Hp, Wp = self._frame(*shape)
        args = f"-f hevc -i pipe: -f rawvideo -pix_fmt {self.pix_fmt} -vsync passthrough pipe:"
        raw = _ffmpeg(args, b"".join(payloads), "HEVC decoding")
        if len(raw) != len(payloads) * Hp * Wp * 2:
            raise InputError(f"{self.name}: the streams do not decode to {Wp}×{Hp} frames")
        frames = np.frombuffer(raw, "<u2").reshape(-1, Hp, Wp)[:, :H, :W].astype(np.int64)
        return untile(torch.from_numpy(frames), *shape)


def _strip_segments(data: bytes, drop: Callable[[int], bool], stop: int) -> bytes:
    """Remove marker segments (FFxx, u16 length) whose ``xx`` satisfies ``drop`` between the
    2-byte SOI/SOC and marker ``stop``: JPEG APPn/COM, the J2K comment OpenJPEG adds."""
    out, i = [data[:2]], 2
    while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] != stop:
        n = 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if not drop(data[i + 1]):
            out.append(data[i : i + n])
        i += n
    return b"".join(out) + data[i:]


class ImageAnchor(Anchor):
    """A Pillow still-image codec on the grey mosaic of the quantized tensor."""

    format: str  # Pillow's format name
    feature: str  # its name in PIL.features

    @classmethod
    def available(cls) -> str | None:
        return None if pil_features.check(cls.feature) else f"Pillow has no {cls.format} codec"

    def config(self) -> dict[str, Any]:
        version = pil_features.version
        return super().config() | {"pillow": version("pil"), self.feature: version(self.feature)}

    @abstractmethod
    def save(self, image: Any, setting: Any) -> bytes:
        """Code one PIL image at ``setting``."""

    def encode_ints(self, q: Tensor, setting: Any) -> list[bytes]:
        dtype = np.uint8 if self.bit_depth <= 8 else np.uint16
        return [self.save(Image.fromarray(m.numpy().astype(dtype)), setting) for m in tile(q)]

    def decode_ints(self, payloads: list[bytes], shape: tuple[int, int, int], bits: int) -> Tensor:
        rows, cols = grid(shape[0])
        size = (cols * shape[2], rows * shape[1])
        mosaics = []
        for i, p in enumerate(payloads):
            try:
                with Image.open(io.BytesIO(p), formats=[self.format]) as im:
                    if im.size != size:
                        raise ValueError(f"it is {im.size}, not {size} (width, height)")
                    a = np.asarray(im.convert("L") if im.mode in ("RGB", "RGBA") else im)
            except Exception as e:  # Pillow's parsers raise many types on bad data
                raise InputError(f"{self.name}: stream {i} does not decode: {e}") from None
            mosaics.append(torch.from_numpy(a.astype(np.int64)))
        return untile(torch.stack(mosaics), *shape)


class JpegAnchor(ImageAnchor):
    """Baseline grey JPEG of the 8-bit mosaic with optimized Huffman tables; the APPn (JFIF)
    and COM segments are stripped. Quality 95 (near the 8-bit quantization) down to 5."""

    name, tag, format, feature, bit_depth = "jpeg", 0xC1, "JPEG", "jpg", 8
    setting_name, setting_range, settings = "quality", (1, 100), (95, 85, 75, 60, 45, 30, 15, 5)

    def save(self, image: Any, setting: Any) -> bytes:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=setting, optimize=True)
        return _strip_segments(buf.getvalue(), lambda m: 0xE0 <= m <= 0xEF or m == 0xFE, 0xDA)


class Jpeg2000Anchor(ImageAnchor):
    """JPEG 2000 codestream (no JP2 boxes, OpenJPEG's comment stripped) of the 16-bit mosaic
    (mode ``I;16``), irreversible 9/7 wavelet, one layer at ``ratio``:1 against 16 bits an
    element (2 ≈ 8 bits an element); its ~140 header bytes floor the rate of small tensors."""

    name, tag, format, feature, bit_depth = "jpeg2000", 0xC2, "JPEG2000", "jpg_2000", 16
    setting_name, setting_range, settings = "ratio", (1.0, 1e4), (2, 4, 8, 16, 32, 64)

    def save(self, image: Any, setting: Any) -> bytes:
        buf = io.BytesIO()
        options = {"no_jp2": True, "irreversible": True, "quality_mode": "rates"}
        image.save(buf, "JPEG2000", quality_layers=[float(setting)], **options)
        return _strip_segments(buf.getvalue(), lambda m: m == 0x64, 0x90)


class AvifAnchor(ImageAnchor):
    """AVIF (AV1 intra through libavif) of the 8-bit mosaic as a monochrome 4:0:0 image:
    Pillow codes mode ``L`` directly, so no chroma planes are paid for; no EXIF/XMP/ICC.
    The HEIF boxes still cost ~300 bytes a tensor."""

    name, tag, format, feature, bit_depth = "avif", 0xC3, "AVIF", "avif", 8
    setting_name, setting_range, settings = "quality", (0, 100), (95, 85, 75, 60, 45, 30, 15, 5)

    def save(self, image: Any, setting: Any) -> bytes:
        buf = io.BytesIO()
        image.save(buf, "AVIF", quality=setting, subsampling="4:0:0", range="full")
        return buf.getvalue()


class ZstdAnchor(Anchor):
    """Min–max quantization to ``bits`` (the setting) and lossless compression of the
    integers, channel-major, one byte each (two, little-endian, above 8 bits), by zstd at
    level 19 or (``compressor="zlib"``) the standard library's zlib at level 9. 8 bits is
    near lossless for task networks, 2 bits very coarse."""

    tag, setting_name, setting_range, settings = 0xD1, "bits", (1, 16), (8, 6, 5, 4, 3, 2)

    def __init__(self, settings: tuple | None = None, level: int | None = None,
                 compressor: str = "zstd") -> None:  # fmt: skip
        if compressor not in ("zstd", "zlib"):
            raise InputError(f"unknown compressor {compressor!r} (known: zstd, zlib)")
        super().__init__(settings)
        self.name, self.tag = compressor, 0xD1 if compressor == "zstd" else 0xD2
        self.level = level if level is not None else 19 if compressor == "zstd" else 9
        self.bit_depth = max(self.settings)
        # available() on an instance checks its own compressor
        self.available = partial(ZstdAnchor.available, compressor)  # type: ignore[method-assign]

    @classmethod
    def available(cls, compressor: str = "zstd") -> str | None:
        if compressor == "zstd" and zstandard is None:
            return "the zstandard package is not installed (pip install zstandard)"
        return None

    def config(self) -> dict[str, Any]:
        lib = f"zlib {zlib.ZLIB_VERSION}" if self.name == "zlib" else zstandard.__version__
        return super().config() | {"level": self.level, "library": lib}

    def encode_ints(self, q: Tensor, setting: Any) -> list[bytes]:
        dtype = np.uint8 if setting <= 8 else np.dtype("<u2")
        raws = [x.numpy().astype(dtype).tobytes() for x in q]
        if self.name == "zlib":
            return [zlib.compress(raw, self.level) for raw in raws]
        return [zstandard.ZstdCompressor(level=self.level).compress(raw) for raw in raws]

    def decode_ints(self, payloads: list[bytes], shape: tuple[int, int, int], bits: int) -> Tensor:
        dtype = np.dtype(np.uint8 if bits <= 8 else "<u2")
        size = math.prod(shape) * dtype.itemsize
        out = []
        for i, p in enumerate(payloads):
            try:
                if self.name == "zlib":
                    d = zlib.decompressobj()
                    raw = d.decompress(p, size + 1)
                    raw = raw if d.eof and not d.unused_data else b""
                else:
                    raw = zstandard.ZstdDecompressor().decompress(p, max_output_size=size)
            except Exception as e:  # zstandard.ZstdError, zlib.error
                raise InputError(f"{self.name}: stream {i} does not decompress: {e}") from None
            if len(raw) != size:
                raise InputError(f"{self.name}: stream {i} does not hold {size} bytes")
            out.append(torch.from_numpy(np.frombuffer(raw, dtype).astype(np.int64)))
        return torch.stack(out).reshape(-1, *shape)


ANCHORS: dict[str, Callable[..., Anchor]] = {
    "x265-12bit": partial(X265Anchor, bit_depth=12),
    "x265-10bit": partial(X265Anchor, bit_depth=10),
    "jpeg": JpegAnchor,
    "jpeg2000": Jpeg2000Anchor,
    "avif": AvifAnchor,
    "zstd": ZstdAnchor,
    "zlib": partial(ZstdAnchor, compressor="zlib"),
}


def build_anchor(name: str, **options: Any) -> Anchor:
    """The anchor registered as ``name`` in :data:`ANCHORS`, built with ``options``."""
    if name not in ANCHORS:
        raise InputError(f"unknown anchor {name!r} (known: {', '.join(ANCHORS)})")
    return ANCHORS[name](**options)


def code_batch(anchor: Anchor, features: Tensor, setting: Any) -> tuple[list[bytes], Tensor]:
    """Encode ``features`` (B, C, h, w) at ``setting`` and decode them: (streams, (B, C, h, w))."""
    streams = anchor.encode(features, setting)
    return streams, anchor.decode(streams)
