"""The fuzzer's seed codecs and streams, and its decode targets (:mod:`eval.fuzz`).

Three tiny codecs with seeded random weights, built through the public API and saved as
checkpoints, so worker processes load them like any user would (:func:`featcodec.load`): an
image codec, a scalable one (base + enhancement) and a video codec (I- and P-frames). Their
analysis transforms are scaled up so that even untrained they code a few hundred bytes per
section (an untrained codec codes nearly nothing). A *target* is a stream kind and the way it
is decoded: ``scalable-base`` decodes the scalable stream with ``layers="base"``,
``video-resume`` decodes the video stream with ``on_error="resume"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featcodec.api import load
from featcodec.codec.bitstream import unpack
from featcodec.codec.errors import FeatcodecError
from featcodec.codec.facade import Codec, default_arch
from featcodec.codec.video import VideoCodec
from featcodec.eval.fuzz_worker import BACKBONE, MANIFEST, TARGETS, measured

TINY = {"name": "hyperprior", "N": 16, "M": 16, "downsample": 1, "attention": False}
ENHANCEMENT = {"N": 16, "M": 16, "downsample": 3, "hyper_downsample": 1}
GAIN = 5.0
"""Factor on the last layer of every analysis transform ``g_a`` of the seed codecs."""


class FuzzNet(nn.Module):
    """A classifier just big enough to split: stride 8 and 16 channels at ``layer2``. The
    stream parsing does not depend on it; a small one keeps each decode at milliseconds."""

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.layer1 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.layer2 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.layer3 = nn.Conv2d(16, 16, 3, stride=1, padding=1)
        self.fc = nn.Linear(16, num_classes or 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.layer1(torch.relu(self.conv1(x))))
        x = torch.relu(self.layer3(self.layer2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def register_fuzz_backbone() -> None:
    """Register :class:`FuzzNet` as :data:`BACKBONE` (once per process)."""
    from featcodec.models.backbones import available_backbones, register_backbone

    if BACKBONE not in available_backbones():
        register_backbone(BACKBONE, FuzzNet)


def amplify(model: nn.Module, gain: float | None = None) -> nn.Module:
    """``model`` with the last convolution of every ``g_a`` scaled by ``gain`` (in place;
    :data:`GAIN` by default)."""
    gain = GAIN if gain is None else gain
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] != "g_a":
                continue
            conv = [c for c in module.modules() if isinstance(c, nn.Conv2d)][-1]
            conv.weight.mul_(gain)
            if conv.bias is not None:
                conv.bias.mul_(gain)
    return model


def build_seeds(
    workdir: str | os.PathLike[str],
    seed: int = 0,
    size: tuple[int, int] = (32, 48),
    backbone: str = BACKBONE,
) -> dict[str, Any]:
    """Build the seed codecs and streams into ``workdir`` (checkpoints ``{kind}.ckpt`` and
    streams ``{kind}.fcb``, deterministic in ``seed``, ``size`` ``(H, W)`` and ``backbone``)
    and write the manifest the workers read (file names relative to ``workdir``, so that the
    folder can be copied); returns it."""
    from featcodec.training.datasets import render_clip

    register_fuzz_backbone()
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    clip = render_clip(seed, num_frames=4, size=size).as_dict()
    images, flows = clip["images"], clip["flow"]
    torch.manual_seed(seed)
    image = amplify(Codec.build(default_arch(backbone=backbone, codec=dict(TINY))).eval())
    torch.manual_seed(seed + 1)
    scalable = Codec.build(
        default_arch(backbone=backbone, codec=dict(TINY), enhancement=dict(ENHANCEMENT))
    )
    scalable = amplify(scalable.eval())
    torch.manual_seed(seed + 2)
    intra = Codec.build(default_arch(backbone=backbone, codec={**TINY, "downsample": 0})).eval()
    video = amplify(VideoCodec(intra, {"N": 8, "M": 8}, {"block": 8}).eval())
    streams = {
        "image": image.encode(images[0]),
        "scalable": scalable.encode(images[1]),
        "video": video.encode_sequence(images, intra_period=2, motion="flow", flows=flows),
    }
    codecs: dict[str, nn.Module] = {"image": image, "scalable": scalable, "video": video}
    seeds = {}
    for kind, codec in codecs.items():
        ckpt, stream = out / f"{kind}.ckpt", out / f"{kind}.fcb"
        codec.save(ckpt)
        stream.write_bytes(streams[kind])
        seeds[kind] = {"checkpoint": ckpt.name, "stream": stream.name, "bytes": len(streams[kind])}
    manifest = {"seed": seed, "size": list(size), "backbone": backbone, "seeds": seeds}
    partial = out / f"{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2))
    os.replace(partial, out / MANIFEST)  # last and atomic: workers wait for it
    return manifest


@dataclass
class Target:
    """A loaded decode target: its name, codec, options, seed stream and that stream's
    decode (the reference every case is compared with)."""

    name: str
    codec: Any
    options: dict[str, str]
    seed_bytes: bytes = b""
    reference: Any = None
    cold_growth: int = 0
    """Peak memory growth of the first decode of the seed stream by this codec (bytes)."""

    def decode(self, data: bytes) -> Any:
        """The decode's result as nested tuples of tensors (``None`` for a lost frame)."""
        if isinstance(self.codec, VideoCodec):
            seq = self.codec.decode_sequence(data, **self.options)
            return tuple(None if f is None else (f.features, f.output) for f in seq.frames)
        d = self.codec.decode(data, **self.options)
        return (d.features, d.output, d.preview, d.enhanced)

    def container_accepts(self, data: bytes) -> bool:
        """Whether the container alone (:func:`~codec.bitstream.unpack`, as this target's
        decode calls it) accepts ``data``: an error raised past it came from a decoder."""
        try:
            if isinstance(self.codec, VideoCodec):
                unpack(data, corrupt="mark")
            else:
                unpack(data, self.options["layers"])
        except FeatcodecError:
            return False
        return True

    def judge(self, result: Any) -> str:
        """``ok-unchanged`` when ``result`` equals the seed's decode, ``ok-partial`` when it is
        a resumed sequence whose decoded frames all equal the seed's (the lost ones reported),
        else ``ok-changed``."""
        if same(result, self.reference):
            return "ok-unchanged"
        partial = (
            self.options.get("on_error") == "resume"
            and len(result) == len(self.reference)
            and all(
                r is None or same(r, ref) for r, ref in zip(result, self.reference, strict=True)
            )
        )
        return "ok-partial" if partial else "ok-changed"


def same(a: Any, b: Any) -> bool:
    """Equal nested tuples/lists/dicts of tensors (shapes, dtypes and every value)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a is None and b is None


def load_targets(workdir: str | os.PathLike[str], names: list[str]) -> list[Target]:
    """The targets ``names`` (of :data:`~eval.fuzz_worker.TARGETS`) from the manifest in
    ``workdir``, each with its reference decode."""
    register_fuzz_backbone()
    manifest = json.loads((Path(workdir) / MANIFEST).read_text())
    codecs: dict[str, Any] = {}
    out: list[Target] = []
    for name in names:
        kind, options = TARGETS[name]
        seed = manifest["seeds"][kind]
        if kind not in codecs:
            codecs[kind] = load(Path(workdir) / seed["checkpoint"])
        stream = (Path(workdir) / seed["stream"]).read_bytes()
        target = Target(name, codecs[kind], options, stream)
        target.reference, error, _, growth, _ = measured(target.decode, target.seed_bytes)
        if error is not None:
            raise RuntimeError(f"the seed stream of {name} does not decode: {error}")
        first = next((t for t in out if t.codec is target.codec), None)
        target.cold_growth = growth if first is None else first.cold_growth
        out.append(target)
    return out
