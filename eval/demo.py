"""``featcodec demo``: the whole pipeline on the embedded synthetic scenes, on a CPU.

1. train the scene task network (scene_resnet10, a small torchvision ResNet);
2. train base codecs in front of its frozen back half, split after layer2, at several λ
   (the first from scratch, each next one fine-tuned from the previous, higher-rate one);
3. encode the test split through real ``.fcb`` files, decode them, run the task;
4. code the same feature tensors with classical anchors (x265 tiling, JPEG, quantize+zstd)
   and push them through the same back end;
5. print λ, bpp from the files' bytes, the likelihood estimate, and task accuracy with and
   without compression, then the BD-rate of the learned codec against each anchor at equal
   accuracy; write ``rd.json``/``rd.csv`` (the ``featcodec eval rd`` format), ``rd.png``,
   ``results.json`` and TensorBoard logs (with the RD figure) under the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.tensorboard import SummaryWriter

from featcodec.codec.facade import Codec
from featcodec.codec.files import atomic_write
from featcodec.eval.anchors import build_anchor
from featcodec.eval.bd import BDResult, Curve, bd_rate, format_bd
from featcodec.eval.plot import plot_rd, save_figure
from featcodec.eval.rd import TaskSplit, evaluate_anchor, evaluate_codec
from featcodec.eval.results import RDRow, software_versions, write_results
from featcodec.eval.sweep import SceneRun, lambda_sweep

log = logging.getLogger(__name__)
"""Progress lines (the CLI shows them; a library user configures logging)."""


@dataclass
class DemoConfig(SceneRun):
    """What the demo trains and measures; the defaults fit in minutes on 2 CPU cores."""

    out: str = "runs/demo"
    attention: bool = False
    distortion: str = "distill"
    lr: float = 3e-3
    anchors: tuple[str, ...] = ("x265-12bit", "jpeg", "zstd")
    # denser where the anchors' accuracy meets the learned codec's (measured: x265's accuracy
    # falls between QP 30 and 45; zstd keeps it down to 2 bits), sparser elsewhere
    anchor_settings: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {
            "x265-12bit": (24, 30, 34, 37, 40, 43, 48),
            "jpeg": (95, 75, 60, 45, 30, 15),
            "zstd": (6, 4, 3, 2, 1),
        }
    )

    @classmethod
    def quick(cls, out: str) -> DemoConfig:
        """A seconds-long configuration for tests."""
        return cls(
            out=out,
            image_size=32,
            train_size=64,
            val_size=16,
            test_size=16,
            batch_size=16,
            task_epochs=1,
            codec_epochs=1,
            finetune_epochs=1,
            lambdas=(2.0, 0.5),
            anchors=("x265-12bit", "zstd"),
            N=16,
            M=16,
            progress=False,
        )


def format_table(rows: list[dict[str, Any]]) -> str:
    """The learned codec's points as a text table."""
    head = (
        f"{'lambda':>7}{'bpp (file)':>12}{'bpp (est.)':>12}"
        f"{'acc':>8}{'acc uncompressed':>18}{'enc ms':>8}{'dec ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['lambda']:>7g}{r['bpp']:>12.4f}{r['bpp_estimated']:>12.4f}"
            f"{r['accuracy']:>8.3f}{r['accuracy_uncompressed']:>18.3f}"
            f"{r['encode_ms']:>8.1f}{r['decode_ms']:>8.1f}"
        )
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Train, code and measure; returns what is written to ``<out>/results.json``."""
    start = time.perf_counter()
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, verbose=False)
    data = cfg.data()
    timings: dict[str, float] = {}

    log.info(f"[1/4] training the task network on {cfg.train_size} synthetic scenes")
    t0 = time.perf_counter()
    task_ckpt = cfg.task_network(data, root)
    timings["task_training_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    checkpoints = lambda_sweep(
        data,
        root,
        "codec",
        cfg.lambdas,
        cfg.codec_epochs,
        cfg.finetune_epochs,
        progress=cfg.progress,
        label="[2/4] ",
        num_classes=data.num_classes,
        task_checkpoint=str(task_ckpt),
        N=cfg.N,
        M=cfg.M,
        attention=cfg.attention,
        lr=cfg.lr,
        cache_frozen=True,
        distortion=cfg.distortion,
    )
    timings["codec_training_s"] = time.perf_counter() - t0

    log.info(f"[3/4] coding the {cfg.test_size} test scenes through .fcb files")
    test = cfg.test_set()
    t0 = time.perf_counter()
    learned = "learned (hyperprior)"
    rd_rows: list[RDRow] = []
    for lmbda, ckpt in checkpoints:
        rd_rows.append(
            evaluate_codec(
                Codec.from_checkpoint(ckpt),
                test,
                learned,
                f"λ={lmbda:g}",
                setting=lmbda,
                checkpoint=str(ckpt),
                stream_dir=root / "streams" / f"lambda{lmbda:g}",
                progress=cfg.progress,
            )
        )
    timings["coding_s"] = time.perf_counter() - t0

    log.info("[4/4] coding the same feature tensors with classical anchors")
    t0 = time.perf_counter()
    split = TaskSplit.of_codec(Codec.from_checkpoint(checkpoints[0][1]))
    reference = rd_rows[0].reference["accuracy"]
    skipped: dict[str, str] = {}
    for name in cfg.anchors:
        anchor = build_anchor(name, settings=cfg.anchor_settings.get(name))
        reason = anchor.available()
        if reason is not None:
            skipped[name] = reason
            log.info(f"      {name} skipped: {reason}")
            continue
        for setting in anchor.settings:
            rd_rows.append(evaluate_anchor(anchor, setting, split, test, reference))
    timings["anchors_s"] = time.perf_counter() - t0

    software = software_versions(ffmpeg=any(a.startswith("x265") for a in cfg.anchors))
    write_results(
        root / "rd.json",
        rd_rows,
        task="classification",
        metric="accuracy",
        dataset=test.info,
        software=software,
    )
    curves = _curves(rd_rows)
    bd = [bd_rate(c, curves[0]) for c in curves[1:]]
    figure = plot_rd(
        curves,
        "accuracy",
        title=f"synthetic scenes {cfg.image_size}×{cfg.image_size}, split after layer2",
        reference=reference,
        bd=bd,
    )
    with SummaryWriter(str(root / "logs" / "demo")) as writer:
        for step, r in enumerate(r for r in rd_rows if r.kind == "learned"):
            writer.add_scalar("demo/bpp", r.bpp, step)
            writer.add_scalar("demo/accuracy", r.metrics["accuracy"], step)
        writer.add_text("demo/bd_rate", "```\n" + format_bd(bd, "accuracy") + "\n```")
        writer.add_figure("demo/rd", figure, close=False)
    save_figure(figure, root / "rd.png")
    timings["total_s"] = time.perf_counter() - start

    points = [
        {
            "lambda": r.setting,
            "checkpoint": r.checkpoint,
            "images": r.images,
            "bpp": r.bpp,
            "bpp_estimated": r.bpp_estimated,
            "accuracy": r.metrics["accuracy"],
            "accuracy_uncompressed": r.reference["accuracy"],
            "encode_ms": r.encode_ms,
            "decode_ms": r.decode_ms,
        }
        for r in rd_rows
        if r.kind == "learned"
    ]
    results = {
        "config": asdict(cfg),
        "task_checkpoint": str(task_ckpt),
        "points": points,
        "bd_rate": [b.as_dict() for b in bd],
        "anchors_skipped": skipped,
        "timings": timings,
        "torch_threads": torch.get_num_threads(),
        "files": {"rd": "rd.json", "csv": "rd.csv", "figure": "rd.png"},
    }
    atomic_write(root / "results.json", json.dumps(results, indent=2))
    return results


def _curves(rows: list[RDRow]) -> list[Curve]:
    """One curve per codec (learned first), points sorted by rate."""
    out = []
    for name in dict.fromkeys(r.codec for r in rows):
        mine = sorted((r for r in rows if r.codec == name), key=lambda r: r.bpp)
        out.append(Curve(name, [r.bpp for r in mine], [r.metrics["accuracy"] for r in mine]))
    return out


def format_bd_rates(results: dict[str, Any]) -> str:
    """The demo's BD-rate table, from ``results.json``'s entries."""
    rows = [
        BDResult(
            b["test"],
            b["anchor"],
            b["bd_rate"] if b["bd_rate"] is not None else math.nan,
            b["overlap"],
            b["notes"],
        )
        for b in results["bd_rate"]
    ]
    return format_bd(rows, "accuracy")
