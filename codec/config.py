"""Typed architecture configurations, each default in one place.

A codec checkpoint stores its architecture as a plain dict (``arch``), hashed as it is into
the model fingerprint, so a checkpoint written with fewer keys keeps its fingerprint. Building
a model goes through these dataclasses: :meth:`ArchConfig.parse` checks every key, type and
range of a stored dict and fills in the defaults, so an absurd or ill-typed architecture (a
forged checkpoint, a typo in a config) is refused with one line before anything is built::

    arch = {"backbone": "scene_resnet10", "num_classes": 5, "split_at": "layer2",
            "codec": {"name": "hyperprior", "N": 128, "M": 128}}
    cfg = ArchConfig.parse(arch)       # cfg.codec.downsample == 1 (the default)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, get_type_hints

from featcodec.codec.errors import CheckpointError
from featcodec.codec.gate import GATES
from featcodec.models.sparse import STAGES

MAX_WIDTH = 4096
"""Largest channel count of a transform (N, M) that an architecture may declare."""
MAX_STAGES = 6
"""Most stride-2 stages of an analysis or hyper-analysis."""
MAX_BLOCKS = 8
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class HyperpriorConfig:
    """The base layer (:class:`~codec.base.HyperpriorCodec`): transform width ``N``, latent
    channels ``M``, stride-2 stages of the analysis and the hyper-analysis, residual blocks per
    resolution, ELIC attention, and the preview synthesis ``g_r`` (the β reward)."""

    name: str = "hyperprior"
    N: int = 128
    M: int = 128
    downsample: int = 1
    hyper_downsample: int = 2
    blocks: int = 1
    attention: bool = True
    preview: bool = False
    gate: str = ""  # "mask" or "derived": only gated latent positions coded (codec.gate)


@dataclass(frozen=True)
class EnhancementConfig:
    """The enhancement layer (:class:`~codec.enhancement.EnhancementCodec`), conditioned on the
    decoded base latent: its widths and stages, whether it ignores the base (the standalone
    lower bound), and its target (the image, or a dense task's output with its channels)."""

    N: int = 64
    M: int = 64
    downsample: int = 4
    hyper_downsample: int = 2
    standalone: bool = False
    target: str = "reconstruction"
    out_channels: int = 3


@dataclass(frozen=True)
class PFrameConfig:
    """The P-frame codec (:class:`~codec.pframe.PFrameCodec`), conditioned on the
    motion-compensated prediction (or coding the residual when not ``conditional``)."""

    N: int = 64
    M: int = 64
    downsample: int = 1
    hyper_downsample: int = 2
    conditional: bool = True
    refine: int = 0  # k of the equivariance filter bank refining the warp (0: the warp alone)


@dataclass(frozen=True)
class MotionConfig:
    """The motion side information (:class:`~codec.edge_motion.MotionCoder`): coarse-flow cell
    size in input pixels and the quantization step in pixels."""

    block: int = 16
    step: float = 0.25


@dataclass(frozen=True)
class ArchConfig:
    """An image codec: the task network (``backbone``, ``num_classes``, its ``task`` and that
    task's options), where it is split, the base layer and an optional enhancement layer."""

    backbone: str = "scene_resnet10"
    num_classes: int = 5
    split_at: str = "layer2"
    codec: HyperpriorConfig = field(default_factory=HyperpriorConfig)
    enhancement: EnhancementConfig | None = None
    task: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)
    sparse: str = ""  # the last stage of a spatially sparse front (models.sparse); "": dense

    @classmethod
    def parse(cls, arch: Any) -> ArchConfig:
        """The configuration of a stored architecture dict; :class:`CheckpointError` (a
        one-line message naming the key) for anything missing, unknown, ill-typed or absurd."""
        data = _mapping(arch, "architecture")
        codec = parse_section(HyperpriorConfig, data.get("codec"), "codec")
        if codec.name != "hyperprior":
            raise CheckpointError(f"architecture: unknown base codec {codec.name!r}")
        enh = data.get("enhancement")
        enhancement = None if enh is None else parse_section(EnhancementConfig, enh, "enhancement")
        options = data.get("task_options", {})
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            raise CheckpointError("architecture: task_options must be a mapping of names")
        rest = {k: v for k, v in data.items() if k not in ("codec", "enhancement", "task_options")}
        top = parse_section(_Top, rest, "architecture")
        if top.sparse and top.sparse not in STAGES:
            raise CheckpointError(
                f"architecture: sparse = {top.sparse!r} is not a stage ({', '.join(STAGES)})"
            )
        if codec.gate and codec.gate not in GATES:
            raise CheckpointError(f"codec: unknown gate {codec.gate!r}; known: {', '.join(GATES)}")
        if codec.gate == "mask" and top.split_at.split(".")[0] != top.sparse:
            raise CheckpointError(
                "codec: the 'mask' gate needs a front that ends in its last sparse stage "
                f"(split at {top.split_at!r}, sparse up to {top.sparse or 'none'})"
            )
        return cls(
            backbone=top.backbone,
            num_classes=top.num_classes,
            split_at=top.split_at,
            codec=codec,
            enhancement=enhancement,
            task=top.task,
            task_options=dict(options),
            sparse=top.sparse,
        )


@dataclass(frozen=True)
class _Top:
    backbone: str = "scene_resnet10"
    num_classes: int = 5
    split_at: str = "layer2"
    task: str = "classification"
    sparse: str = ""


C = TypeVar("C")

_LIMITS = {
    "N": (1, MAX_WIDTH),
    "M": (1, MAX_WIDTH),
    "out_channels": (1, MAX_WIDTH),
    "downsample": (0, MAX_STAGES),
    "hyper_downsample": (0, MAX_STAGES),
    "blocks": (0, MAX_BLOCKS),
    "num_classes": (1, MAX_CLASSES),
    "block": (1, 1024),
    "step": (1e-3, 64.0),
    "refine": (0, 7),
}
"""Plausible ranges of the numeric fields (inclusive)."""


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(f"{what} must be a mapping of names, not {type(value).__name__}")
    return value


def parse_section(cls: type[C], value: Any, what: str) -> C:
    """``value`` (a dict, or ``None`` for all defaults) as the dataclass ``cls``: unknown keys,
    wrong types (a bool is not an int) and values outside :data:`_LIMITS` are refused."""
    data = {} if value is None else _mapping(value, what)
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{what}: unknown key(s) {', '.join(unknown)}")
    for key, val in data.items():
        want = hints[key]
        if want is int or want == "int":
            ok = isinstance(val, int) and not isinstance(val, bool)
        elif want is float:
            ok = isinstance(val, int | float) and not isinstance(val, bool)
        elif want is bool:
            ok = isinstance(val, bool)
        elif want is str:
            ok = isinstance(val, str) and 0 < len(val) <= 200
        else:
            ok = True
        if not ok:
            raise CheckpointError(f"{what}: {key} = {val!r} is not a valid {want.__name__}")
        if key in _LIMITS:
            lo, hi = _LIMITS[key]
            if not lo <= val <= hi:
                raise CheckpointError(f"{what}: {key} = {val!r} is outside {lo}..{hi}")
    return cls(**data)


def as_dict(config: Any) -> dict[str, Any]:
    """A configuration as the plain dict stored in checkpoints (every field)."""
    return dataclasses.asdict(config)
