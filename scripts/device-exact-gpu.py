"""Issue 13, item 4: streams cross between a GPU and the CPU. Synthetic scenes (image streams)
and clips (video streams) are encoded on one device and decoded on the other, both ways, with
TF32 and cuDNN autotuning on; every decode that fails its check or whose entropy-decoded
latents differ from the encoder's own decode is a mismatch (target 0).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/device-exact-gpu.py \\
        --checkpoint runs/demo-final/codec-lambda1.ckpt --scenes 1000 --clips 50

``--a cpu --b cpu`` runs the same protocol on one machine (a smoke test without a GPU).
Writes ``<out>`` (JSON) with the counts, the devices' names and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from featcodec.codec.errors import BitstreamError
from featcodec.codec.facade import Codec
from featcodec.codec.hyperprior import ConditionalHyperprior
from featcodec.codec.video import VideoCodec
from featcodec.eval.data import synthetic_eval_set
from featcodec.training.datasets import SyntheticClips


def _latents(fn, *args):  # the entropy-decoded latents of one decode
    seen: list[torch.Tensor] = []
    original = ConditionalHyperprior.latent_decompress, ConditionalHyperprior.latent_read

    def record(method):
        def wrapped(self, *a, **kw):
            y = method(self, *a, **kw)
            seen.append(y.detach().cpu())
            return y

        return wrapped

    ConditionalHyperprior.latent_decompress = record(original[0])
    ConditionalHyperprior.latent_read = record(original[1])
    try:
        out = fn(*args)
    finally:
        ConditionalHyperprior.latent_decompress, ConditionalHyperprior.latent_read = original
    return out, seen


def _name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="an image codec checkpoint")
    p.add_argument("--video", type=Path, help="a video codec checkpoint (default: none)")
    p.add_argument("--scenes", type=int, default=1000)
    p.add_argument("--clips", type=int, default=50)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=48, help="scene and clip size (the demo's)")
    p.add_argument("--a", default="cuda")
    p.add_argument("--b", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/device-exact.json"))
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    a, b = torch.device(args.a), torch.device(args.b)
    image = {d: Codec.from_checkpoint(args.checkpoint).to(d).eval() for d in (a, b)}
    size = args.size
    scenes = synthetic_eval_set("test", args.scenes, size, seed=7)
    counts = {"image a→b": [0, 0], "image b→a": [0, 0], "video a→b": [0, 0], "video b→a": [0, 0]}
    failures: list[str] = []
    t0 = time.perf_counter()
    index = 0
    for batch in scenes.batches(64):
        for x in batch["image"]:
            for enc, dec, key in ((a, b, "image a→b"), (b, a, "image b→a")):
                data = image[enc].encode(x.to(enc))
                _, mine = _latents(image[enc].decode, data)
                counts[key][0] += 1
                try:
                    _, theirs = _latents(image[dec].decode, data)
                    same = all(torch.equal(m, t) for m, t in zip(mine, theirs, strict=True))
                except BitstreamError as e:
                    same, theirs = False, [str(e)]
                if not same:
                    counts[key][1] += 1
                    failures.append(f"{key} scene {index}")
            index += 1
    if args.video is not None:
        video = {d: VideoCodec.from_checkpoint(args.video).to(d).eval() for d in (a, b)}
        clips = SyntheticClips("test", args.clips, size, args.frames, seed=7)
        for c in range(len(clips)):
            clip = clips[c]
            for enc, dec, key in ((a, b, "video a→b"), (b, a, "video b→a")):
                data = video[enc].encode_sequence(
                    clip["images"].to(enc), 8, "flow", flows=clip["flow"]
                )
                mine = video[enc].decode_sequence(data)
                counts[key][0] += 1
                try:
                    theirs = video[dec].decode_sequence(data)
                    same = all(
                        torch.equal(m.features.cpu(), t.features.cpu())
                        for m, t in zip(mine.frames, theirs.frames, strict=True)
                    )
                except BitstreamError:
                    same = False
                if not same:
                    counts[key][1] += 1
                    failures.append(f"{key} clip {c}")
    report = {
        "devices": {"a": f"{a} ({_name(a)})", "b": f"{b} ({_name(b)})"},
        "counts": {k: {"coded": n, "mismatches": m} for k, (n, m) in counts.items()},
        "failures": failures[:50],
        "settings": {
            "tf32": True,
            "cudnn_benchmark": True,
            "threads": torch.get_num_threads(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
            "torch": torch.__version__,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
