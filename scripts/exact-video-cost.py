"""What the fixed-point prediction path costs P-frames: a P-frame codec is trained on synthetic
clips behind a given intra codec (e.g. the demo's) unless it is there already; the same
clips are then coded with device-exact parameters and a fixed-point prediction path (format
version 2, the default) and with float ones (``VideoCodec.coding = FLOAT``), through real streams.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/exact-video-cost.py --out runs/exact-video \
        --intra runs/demo-final/codec-lambda1.ckpt --size 48

Prints I- and P-frame bytes and the task metric of both, and how far the decoded features of
the two paths are apart; writes ``<out>/exact-video-cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from featcodec.codec.coding_mode import EXACT, FLOAT
from featcodec.codec.video import VideoCodec
from featcodec.eval.video import evaluate_video
from featcodec.training.datasets import SyntheticClips, SyntheticClipsDataModule
from featcodec.training.pframe_module import PFrameModule


def train_pframe(intra: Path, size: int, epochs: int, clips: int, path: Path) -> None:
    import lightning.pytorch as pl

    torch.manual_seed(0)
    module = PFrameModule(
        str(intra), N=32, M=32, lmbda=300.0, lr=3e-3, motion="flow", distortion="mse"
    )
    data = SyntheticClipsDataModule(image_size=size, num_frames=3, train_size=clips, batch_size=8)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    module.codec.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/exact-video"))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--intra", type=Path, required=True, help="the intra codec's checkpoint")
    p.add_argument("--train-clips", type=int, default=512)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    intra, pframe = args.intra, args.out / "pframe.ckpt"
    t0 = time.perf_counter()
    if not pframe.exists():
        train_pframe(intra, args.size, 4, args.train_clips, pframe)
    trained_s = time.perf_counter() - t0
    codec = VideoCodec.from_checkpoint(pframe).eval()
    clips = SyntheticClips("test", args.clips, args.size, args.frames)
    settings = {
        "threads": torch.get_num_threads(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "clips": args.clips,
        "frames": args.frames,
        "size": args.size,
        "exact_reference": codec.exact_reference,
        "training_s": round(trained_s, 1),
    }
    print("settings:", json.dumps(settings))
    reports = {}
    for name, mode in (("exact", EXACT), ("float", FLOAT)):
        codec.coding = mode
        t = time.perf_counter()
        reports[name] = evaluate_video(
            codec, clips, 8, motion="flow", no_motion=False, progress=False
        )
        reports[name]["seconds"] = time.perf_counter() - t
    codec.coding = EXACT
    gaps = []
    for index in range(min(5, len(clips))):
        images = clips[index]["images"]
        outs = {}
        for name, mode in (("exact", EXACT), ("float", FLOAT)):
            codec.coding = mode
            data = codec.encode_sequence(images, 8, "flow", flows=clips[index]["flow"])
            outs[name] = codec.decode_sequence(data)
        for a, b in zip(outs["exact"].frames, outs["float"].frames, strict=True):
            gaps.append(float((a.features - b.features).abs().mean() / b.features.abs().mean()))
    codec.coding = EXACT
    print(f"{'path':>6} {'I bytes':>9} {'P bytes':>9} {'I metric':>9} {'P metric':>9} {'s':>7}")
    for name, r in reports.items():
        video = r["codecs"][0]["video"]
        print(
            f"{name:>6} {r['intra']['bytes']['I']:>9.2f} {video['bytes']['P']:>9.2f} "
            f"{r['intra']['metric']['I']:>9.4f} {video['metric']['P']:>9.4f} {r['seconds']:>7.1f}"
        )
    ratio = reports["exact"]["codecs"][0]["video"]["bytes"]["P"] / max(
        reports["float"]["codecs"][0]["video"]["bytes"]["P"], 1e-9
    )
    print(f"P-frame bytes exact / float: {ratio:.4f}")
    print(f"decoded features, exact vs float path: mean relative gap {sum(gaps) / len(gaps):.2e}")
    (args.out / "exact-video-cost.json").write_text(
        json.dumps({"settings": settings, "reports": reports, "gaps": gaps}, indent=2)
    )


if __name__ == "__main__":
    main()
