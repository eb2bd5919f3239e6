"""``featcodec demo``: the whole pipeline on the embedded synthetic scenes, on a CPU.

1. train the scene task network (scene_resnet10, a small torchvision ResNet);
2. train base codecs in front of its frozen back half, split after layer2, at several λ
   (the first from scratch, each next one fine-tuned from the previous, higher-rate one);
3. encode the test split through real ``.fcb`` files, decode them, run the task;
4. print λ, bpp from the files' bytes, the likelihood estimate, and task accuracy with and
   without compression; write ``results.json`` and TensorBoard logs under the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from codec.facade import Codec
from codec.files import atomic_write
from eval.rd import RDPoint, measure
from training.codec_module import BaseCodecModule
from training.datasets import SyntheticScenesDataModule
from training.task import TaskModule


@dataclass
class DemoConfig:
    """What the demo trains and measures; the defaults fit in minutes on 2 CPU cores."""

    out: str = "runs/demo"
    image_size: int = 48
    train_size: int = 4800
    val_size: int = 200
    test_size: int = 300
    batch_size: int = 32
    task_epochs: int = 4
    codec_epochs: int = 3
    finetune_epochs: int = 1
    lambdas: tuple[float, ...] = (4.0, 1.0, 0.25)
    N: int = 64
    M: int = 64
    attention: bool = False
    distortion: str = "distill"
    lr: float = 3e-3
    seed: int = 0
    threads: int | None = None
    progress: bool = True

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
            N=16,
            M=16,
            progress=False,
        )


def _trainer(cfg: DemoConfig, name: str, epochs: int, root: Path) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(root / "logs", name=name, version=""),
        enable_checkpointing=False,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )


def _labelled(dataset: Any) -> Iterator[tuple[str, torch.Tensor, int]]:
    for i in range(len(dataset)):
        item = dataset[i]
        yield f"{i:05d}", item["image"], int(item["label"])


def format_table(rows: list[dict[str, Any]]) -> str:
    """The demo's results as a text table."""
    head = (
        f"{'lambda':>7}{'bpp (file)':>12}{'bpp (payload)':>15}{'bpp (est.)':>12}"
        f"{'acc':>8}{'acc uncompressed':>18}{'enc ms':>8}{'dec ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['lambda']:>7g}{r['bpp']:>12.4f}{r['bpp_payload']:>15.4f}"
            f"{r['bpp_estimated']:>12.4f}{r['accuracy']:>8.3f}{r['accuracy_uncompressed']:>18.3f}"
            f"{r['encode_ms']:>8.1f}{r['decode_ms']:>8.1f}"
        )
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Train, code and measure; returns what is written to ``<out>/results.json``."""
    start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, verbose=False)
    data = SyntheticScenesDataModule(
        image_size=cfg.image_size,
        train_size=cfg.train_size,
        val_size=cfg.val_size,
        test_size=cfg.test_size,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    timings: dict[str, float] = {}

    print(f"[1/3] training the task network on {cfg.train_size} synthetic scenes", flush=True)
    t0 = time.perf_counter()
    task = TaskModule(num_classes=data.num_classes)
    trainer = _trainer(cfg, "tasknet", cfg.task_epochs, root)
    trainer.fit(task, data)
    task_ckpt = root / "tasknet.ckpt"
    trainer.save_checkpoint(task_ckpt)
    timings["task_training_s"] = time.perf_counter() - t0

    checkpoints: list[tuple[float, Path]] = []
    previous: Path | None = None
    for i, lmbda in enumerate(sorted(cfg.lambdas, reverse=True)):
        print(f"[2/3] training base codec {i + 1}/{len(cfg.lambdas)}, λ={lmbda:g}", flush=True)
        t0 = time.perf_counter()
        module = BaseCodecModule(
            num_classes=data.num_classes,
            task_checkpoint=str(task_ckpt),
            N=cfg.N,
            M=cfg.M,
            attention=cfg.attention,
            lr=cfg.lr,
            cache_frozen=True,
            lmbda=lmbda,
            distortion=cfg.distortion,  # type: ignore[arg-type]
            init_codec=str(previous) if previous else None,
        )
        epochs = cfg.finetune_epochs if previous else cfg.codec_epochs
        trainer = _trainer(cfg, f"codec_lambda{lmbda:g}", epochs, root)
        trainer.fit(module, data)
        previous = root / f"codec-lambda{lmbda:g}.ckpt"
        trainer.save_checkpoint(previous)
        checkpoints.append((lmbda, previous))
        timings[f"codec_training_lambda{lmbda:g}_s"] = time.perf_counter() - t0

    print(f"[3/3] coding the {cfg.test_size} test scenes through .fcb files", flush=True)
    data.setup("test")
    test_set = data.test_dataloader().dataset
    t0 = time.perf_counter()
    rows = []
    for lmbda, ckpt in checkpoints:
        codec = Codec.from_checkpoint(ckpt)
        point: RDPoint = measure(
            codec,
            _labelled(test_set),
            stream_dir=root / "streams" / f"lambda{lmbda:g}",
            progress=f"λ={lmbda:g}" if cfg.progress else None,
        )
        rows.append({"lambda": lmbda, "checkpoint": str(ckpt), **point.as_dict()})
    timings["coding_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start

    results = {
        "config": asdict(cfg),
        "task_checkpoint": str(task_ckpt),
        "points": rows,
        "timings": timings,
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write(root / "results.json", json.dumps(results, indent=2))
    with SummaryWriter(str(root / "logs" / "demo")) as writer:
        for step, r in enumerate(rows):
            for key in ("bpp", "bpp_estimated", "accuracy", "accuracy_uncompressed"):
                writer.add_scalar(f"demo/{key}", r[key], step)
        writer.add_text("demo/results", "```\n" + format_table(rows) + "\n```")
    return results
