"""The ``Codec`` facade: one object from image to bitstream to task output.

::

    edge:    x (1,3,H,W) ─normalize─ front ─▶ F ─ base.compress ─▶ .fcb bytes
    server:  .fcb bytes ─ base.decompress ─▶ F̂ ─ back ─▶ task output

A codec is fully described by its *architecture* (a plain dict, stored in checkpoints) and
its weights; its *fingerprint* hashes both and is written into every stream, so a stream is
only ever decoded by the model that wrote it. The task network (front and back) is frozen:
``Codec.train()`` leaves it in eval mode.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from featcodec.codec.bitstream import (
    FINGERPRINT_BYTES,
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_INPUT_PIXELS,
    Section,
    SectionKind,
    ShapeTag,
    Stream,
    pack,
    unpack,
)
from featcodec.codec.checkpoint import checkpoint_entry, load_checkpoint, rebuild, save_checkpoint
from featcodec.codec.coding_mode import EXACT, header_fields
from featcodec.codec.config import ArchConfig
from featcodec.codec.enhancement import EnhancementCodec
from featcodec.codec.entropy import bits
from featcodec.codec.errors import BitstreamError, InputError
from featcodec.codec.fingerprint import Stamp, canonical_state, version_stamp, weights_digest
from featcodec.codec.registry import build_codec
from featcodec.codec.sequence import check_layout
from featcodec.models.backbones import Normalize
from featcodec.models.sparse import sparse_blocks
from featcodec.models.split import Split
from featcodec.models.tasks import task_of


def default_arch(**overrides: Any) -> dict[str, Any]:
    """Architecture of the demo's codec: scene_resnet10 split after layer2, hyperprior base."""
    arch: dict[str, Any] = {
        "backbone": "scene_resnet10",
        "num_classes": 5,
        "split_at": "layer2",
        "codec": {"name": "hyperprior", "N": 128, "M": 128, "downsample": 1},
    }
    arch.update(overrides)
    return arch


@dataclass
class CodecOutput:
    """Training-time pass through the whole pipeline.

    Attributes:
        output: task output on the reconstructed features ``back(F̂)``.
        features: uncompressed features ``F``.
        features_hat: reconstruction ``F̂``.
        likelihoods: latent likelihoods, for the (estimated) rate term.
        preview: the base layer's picture of the input ``(B, 3, H, W)``, if it has ``g_r``.
    """

    output: Any
    features: Tensor
    features_hat: Tensor
    likelihoods: dict[str, Tensor]
    preview: Tensor | None = None

    def bits(self) -> Tensor:
        """Estimated bits of the whole batch, −Σlog₂p (a training signal)."""
        return sum(bits(v) for v in self.likelihoods.values())


@dataclass
class Decoded:
    """What :meth:`Codec.decode` returns: features ``(1, C, h, w)``, task output, stream, the
    base layer's preview image ``(1, 3, H, W)`` when the codec has one, and the enhancement
    layer's output ``(1, out, H, W)`` when it was decoded."""

    features: Tensor
    output: Tensor
    stream: Stream
    preview: Tensor | None = None
    enhanced: Tensor | None = None


class Codec(nn.Module):
    """A split task network with a learned base-layer codec at the split.

    Build it with :meth:`build` (architecture dict), :meth:`from_split` (an already split,
    e.g. trained, network) or :meth:`from_checkpoint`.
    """

    def __init__(
        self,
        arch: dict[str, Any],
        split: Split,
        base: nn.Module,
        enhancement: EnhancementCodec | None = None,
    ) -> None:
        super().__init__()
        self.arch = copy.deepcopy(arch)
        self.normalize = Normalize()
        self.front = split.front
        self.base = base
        self.back = split.back
        self.enhancement = enhancement
        self.stride = split.stride
        self.channels = split.channels
        self.coding = EXACT
        """How :meth:`encode` codes latents: :data:`~codec.bitstream.EXACT` (format version 2,
        device-exact entropy parameters; the default), ``FLOAT`` or ``LEGACY`` (version 1), for
        comparisons. Decoding follows each stream's header."""
        for p in (*self.front.parameters(), *self.back.parameters()):
            p.requires_grad_(False)
        self._fingerprint: tuple[Stamp, tuple[bytes, bytes | None]] | None = None
        self._tensors: dict[str, Tensor] | None = None
        self.train()

    # construction ---------------------------------------------------------------------------

    @classmethod
    def from_split(cls, arch: dict[str, Any], split: Split) -> Codec:
        """A codec with fresh weights around an already split (e.g. trained) network; ``arch``
        is checked (:meth:`~codec.config.ArchConfig.parse`) before anything is built."""
        cfg = ArchConfig.parse(arch)
        base = build_codec(
            cfg.codec.name,
            in_channels=split.channels,
            input_stride=split.stride,
            **{k: v for k, v in asdict(cfg.codec).items() if k != "name"},
        )
        enhancement = None
        if cfg.enhancement is not None:
            enhancement = EnhancementCodec(
                base_channels=cfg.codec.M,
                base_stride=split.stride * 2**cfg.codec.downsample,
                **asdict(cfg.enhancement),
            )
        return cls(arch, split, base, enhancement)

    @classmethod
    def build(cls, arch: dict[str, Any], weights: str | None = None) -> Codec:
        """A codec with fresh weights (the task network's from ``weights`` if given)."""
        cfg = ArchConfig.parse(arch)
        task = task_of(arch)
        model = task.network(
            cfg.backbone, weights, cfg.num_classes, cfg.task_options, cfg.sparse or None
        )
        return cls.from_split(arch, task.split(model, cfg.split_at, cfg.backbone))

    def _apply(self, fn: Any, recurse: bool = True) -> Codec:
        self._tensors = self._fingerprint = None  # .to()/.half() may replace tensors
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> Codec:
        super().train(mode)
        self.front.eval()
        self.back.eval()
        return self

    # training pass --------------------------------------------------------------------------

    def features(self, x: Tensor) -> Tensor:
        """Features ``F`` ``(B, C, h, w)`` of images ``x`` ``(B, 3, H, W)`` in [0, 1]."""
        with torch.no_grad():
            return self.front(self.normalize(x))

    def front_mask(self) -> Tensor | None:
        """The execution mask ``(B, 1, h, w)`` of the front's last sparse block in the last
        :meth:`features` call (what the ``"mask"`` gate codes by); ``None`` for a dense front."""
        blocks = sparse_blocks(self.front)
        return blocks[-1][1].mask if blocks else None

    def forward(self, x: Tensor) -> CodecOutput:
        """Training pass on images ``x`` ``(B, 3, H, W)``."""
        f = self.features(x)
        return self.forward_features(f, mask=self.front_mask())

    def forward_features(
        self, f: Tensor, head: Callable[[Tensor], Any] | None = None, mask: Tensor | None = None
    ) -> CodecOutput:
        """Training pass on features ``f`` ``(B, C, h, w)`` already taken at the split.
        ``head`` replaces ``back`` for the output (a detector's loss pass, say); ``mask``: the
        front's (:meth:`front_mask`), for a ``"mask"``-gated base."""
        out = self.base(f, mask)
        output = (head or self.back)(out.features_hat)
        return CodecOutput(output, f, out.features_hat, out.likelihoods, out.preview)

    def aux_loss(self) -> Tensor:
        return self.base.aux_loss()

    # identity -------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> bytes:
        """Hash of the base model (architecture and every weight of the task network and the
        base layer); written into every stream's header. The enhancement layer has its own,
        :attr:`enhancement_fingerprint`, so adding one leaves base streams decodable.

        Recomputed only when a tensor was modified in place (an optimizer step, a state-dict
        load) or replaced, which the tensors' version counters tell.
        """
        return self._fingerprints()[0]

    @property
    def enhancement_fingerprint(self) -> bytes | None:
        """Hash of the enhancement layer's architecture and weights and of the base model's
        fingerprint (an enhancement only decodes on the base it was trained on)."""
        return self._fingerprints()[1]

    def _fingerprints(self) -> tuple[bytes, bytes | None]:
        if self._tensors is None:
            self._tensors = self.state_dict(keep_vars=True)
        tensors = self._tensors
        stamp = version_stamp(tensors.values())
        if self._fingerprint is None or self._fingerprint[0] != stamp:
            base = {k: v for k, v in self.arch.items() if k != "enhancement"}
            named = canonical_state(self, tensors)  # under their format-1 names, for good
            h = weights_digest(
                base, {k: v for k, v in named.items() if not k.startswith("enhancement.")}
            )
            enh = None
            if self.enhancement is not None:
                weights = {k: v for k, v in named.items() if k.startswith("enhancement.")}
                enh = weights_digest({"base": h.hex(), "arch": self.arch["enhancement"]}, weights)
            self._fingerprint = (stamp, (h, enh))
        return self._fingerprint[1]

    # coding ---------------------------------------------------------------------------------

    def check_input(self, t: Tensor, channels: int, what: str, unit_range: bool = False) -> Tensor:
        """``t`` ``(C, H, W)`` or ``(1, C, H, W)`` as a float batch of one, or
        :class:`InputError` naming what is wrong with it (``what`` names the input); with
        ``unit_range`` (images) its values must lie in [0, 1]."""
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[0] != 1:
            raise InputError(f"{what}: expected a (C, H, W) tensor, got shape {tuple(t.shape)}")
        if t.shape[1] != channels:
            raise InputError(
                f"{what}: expected {channels} channels "
                f"({self.arch['backbone']} split at {self.arch['split_at']}), got {t.shape[1]}"
            )
        if not t.is_floating_point():
            raise InputError(f"{what}: expected floating-point values, got {t.dtype}")
        h, w = t.shape[-2:]
        if not (1 <= h <= MAX_DIM and 1 <= w <= MAX_DIM) or t.numel() > MAX_ELEMENTS:
            raise InputError(f"{what}: size {h}×{w} is outside what a stream can describe")
        scale = 1 if channels == 3 else self.stride
        if h * w * scale * scale > MAX_INPUT_PIXELS:
            raise InputError(
                f"{what}: an input of {h * scale}×{w * scale} pixels is over the limit of "
                f"{MAX_INPUT_PIXELS:,} pixels (codec.bitstream.MAX_INPUT_PIXELS); "
                "code it in tiles"
            )
        if not torch.isfinite(t).all():
            raise InputError(f"{what}: contains NaN or Inf values")
        if unit_range:
            low, high = float(t.min()), float(t.max())
            if low < 0 or high > 1:
                raise InputError(
                    f"{what}: values must lie in [0, 1], found {low:.4g}..{high:.4g} "
                    "(scale 8-bit images by 1/255)"
                )
        return t.float()

    def encode(self, x: Tensor, layers: str = "all") -> bytes:
        """Code an image ``x`` ``(3, H, W)`` or ``(1, 3, H, W)`` with values in [0, 1].

        With an enhancement layer and ``layers="all"`` the stream holds the base sections,
        then the enhancement's (``HYPER_ENH`` starts with :attr:`enhancement_fingerprint`).
        """
        if layers not in ("all", "base"):
            raise InputError(f"layers must be 'all' or 'base', not {layers!r}")
        x = self.check_input(x, 3, "image", unit_range=True).to(self._device)
        f = self.features(x)
        mask = self.front_mask()
        images = None if self.enhancement is None or layers == "base" else x
        return self.encode_batch(f, tuple(x.shape[-2:]), images=images, mask=mask)[0]

    def encode_features(self, f: Tensor, input_size: tuple[int, int] | None = None) -> bytes:
        """Code a feature tensor ``(C, h, w)`` or ``(1, C, h, w)`` taken at the split.

        ``input_size`` is the size of the image it came from (for bits per pixel); by default
        ``(h·stride, w·stride)``. A ``"mask"``-gated base codes every position (the front's
        mask is not known here).
        """
        f = self.check_input(f, self.channels, "features").to(self._device)
        return self.encode_batch(f, input_size)[0]

    @torch.no_grad()
    def encode_batch(
        self,
        f: Tensor,
        input_size: tuple[int, int] | None = None,
        images: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> list[bytes]:
        """One stream per element of a batch of features ``(B, C, h, w)`` (not validated:
        for features this codec's front produced, e.g. during validation). With ``images``
        ``(B, 3, H, W)`` and an enhancement layer, the streams carry both layers; ``mask``:
        the front's (:meth:`front_mask`), for a ``"mask"``-gated base."""
        h, w = f.shape[-2:]
        H, W = input_size or (h * self.stride, w * self.stride)
        code = self.base.compress(f, self.coding, mask)
        shapes = {ShapeTag.INPUT: (3, H, W), ShapeTag.FEATURES: tuple(f.shape[1:])}
        sections = [
            [Section(SectionKind.HYPER, z), Section(SectionKind.BASE, y)]
            for y, z in zip(code.y, code.z, strict=True)
        ]
        if images is not None and self.enhancement is not None:
            enh = self.enhancement.compress(images, code.y_hat, self.coding)
            tag = self.enhancement_fingerprint
            assert tag is not None
            for secs, y, z in zip(sections, enh.y, enh.z, strict=True):
                secs += [Section(SectionKind.HYPER_ENH, tag + z), Section(SectionKind.ENH, y)]
        version, flags = header_fields(self.coding)
        return [
            pack(Stream(self.fingerprint, shapes, tuple(secs), version, flags)) for secs in sections
        ]

    def check_stream(self, stream: Stream) -> tuple[int, int]:
        """Raise :class:`BitstreamError` unless this model can decode ``stream``; returns the
        features' spatial size."""
        if stream.fingerprint != self.fingerprint:
            raise BitstreamError(
                f"stream was written by model {stream.fingerprint.hex()}, "
                f"this checkpoint is {self.fingerprint.hex()}"
            )
        check_layout(stream)
        h, w = check_shapes(stream, self.channels, self.stride)
        if not stream.has(SectionKind.BASE) and stream.has(SectionKind.ENH):
            raise BitstreamError("enhancement section without its base layer")
        for kind in (SectionKind.HYPER, SectionKind.BASE):
            stream.section(kind)  # present
        return h, w

    def check_enhancement(self, stream: Stream) -> None:
        """Raise :class:`BitstreamError` unless this model can decode the enhancement layer."""
        if not stream.has(SectionKind.ENH) or not stream.has(SectionKind.HYPER_ENH):
            what = "was cut after its base layer" if stream.cut else "has no enhancement layer"
            raise BitstreamError(f"the stream {what}; decode it with --layers base")
        if self.enhancement is None:
            raise BitstreamError("this checkpoint has no enhancement layer (use --layers base)")
        head = stream.section(SectionKind.HYPER_ENH)
        tag, mine = head[:FINGERPRINT_BYTES], self.enhancement_fingerprint
        if tag != mine:
            assert mine is not None
            raise BitstreamError(
                f"enhancement layer was written by model {tag.hex()}, this checkpoint's "
                f"enhancement is {mine.hex()} (base and enhancement from different models?)"
            )

    @torch.no_grad()
    def decode(self, data: bytes | Stream, layers: str = "all") -> Decoded:
        """Decode a stream into features ``F̂`` ``(1, C, h, w)``, the task output, and with
        ``layers="all"`` the enhancement target when the stream has one.

        ``layers="base"`` decodes the base alone, also from a stream cut after the base
        sections; ``layers="all"`` on a stream that carries an enhancement layer requires a
        checkpoint with the matching enhancement.
        """
        if layers not in ("all", "base"):
            raise InputError(f"layers must be 'all' or 'base', not {layers!r}")
        stream = unpack(data, layers) if isinstance(data, bytes | bytearray) else data
        size = self.check_stream(stream)
        enhance = layers == "all" and (
            self.enhancement is not None or stream.has(SectionKind.ENH) or stream.cut
        )
        if enhance:
            self.check_enhancement(stream)
        try:
            f_hat, y_hat = self.base.decompress(
                [stream.section(SectionKind.BASE)],
                [stream.section(SectionKind.HYPER)],
                size,
                stream.mode,
            )
        except BitstreamError as e:
            raise BitstreamError(f"base layer: {e}") from None
        _, H, W = stream.shape(ShapeTag.INPUT)
        enhanced = None
        if enhance:
            assert self.enhancement is not None
            try:
                enhanced = self.enhancement.decompress(
                    [stream.section(SectionKind.ENH)],
                    [stream.section(SectionKind.HYPER_ENH)[FINGERPRINT_BYTES:]],
                    y_hat,
                    (H, W),
                    stream.mode,
                )
            except BitstreamError as e:
                raise BitstreamError(f"enhancement layer: {e}") from None
        preview = self.base.preview(y_hat, (H, W))
        return Decoded(f_hat, self.back(f_hat), stream, preview, enhanced)

    @property
    def _device(self) -> torch.device:
        return next(self.base.parameters()).device

    # checkpoints ----------------------------------------------------------------------------

    def checkpoint_entry(self, state_prefix: str) -> dict[str, Any]:
        """The ``featcodec`` entry that makes a checkpoint loadable by :meth:`from_checkpoint`."""
        return checkpoint_entry("codec", self.arch, state_prefix)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a standalone checkpoint (same format as the training checkpoints)."""
        save_checkpoint(self, path)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> Codec:
        """Rebuild a codec from a checkpoint alone (training or :meth:`save` checkpoint)."""
        return rebuild(path, load_checkpoint(path, kind="codec"), cls.build)


def check_shapes(stream: Stream, channels: int, stride: int) -> tuple[int, int]:
    """The features' spatial size ``(h, w)`` of ``stream``, after checking its shapes against
    a model with ``channels`` feature channels at ``stride``: ranks, channel count, input and
    feature sizes that agree, and an input within :data:`MAX_INPUT_PIXELS` — so that nothing
    is allocated for a shape the model cannot have written."""
    c, h, w = _dims(stream, ShapeTag.FEATURES, 3)
    C, H, W = _dims(stream, ShapeTag.INPUT, 3)
    if C != 3:
        raise BitstreamError(f"input shape {(C, H, W)} is not an RGB image")
    if c != channels:
        raise BitstreamError(f"stream has {c} feature channels, the model {channels}")
    for size, feat in ((H, h), (W, w)):
        if abs(size / stride - feat) >= 1:
            raise BitstreamError(
                f"input size {H}×{W} does not match feature size {h}×{w} at stride {stride}"
            )
    if H * W > MAX_INPUT_PIXELS:
        raise BitstreamError(f"input size {H}×{W} is over the limit of {MAX_INPUT_PIXELS:,} pixels")
    return h, w


def _dims(stream: Stream, tag: ShapeTag, ndim: int) -> tuple[int, ...]:
    dims = stream.shape(tag)
    if len(dims) != ndim:
        raise BitstreamError(f"{tag.name.lower()} shape {dims} should have {ndim} dimensions")
    return dims
