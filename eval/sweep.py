"""Training runs shared by the experiments (``featcodec demo``, ``experiment scalable``).

One :func:`trainer` for every stage, and one :func:`lambda_sweep` that trains a base codec at
each λ (the first from scratch, each next one fine-tuned from the previous, higher-rate one).
With ``resume`` a stage whose checkpoint is already in the run folder, with the same
hyper-parameters, is not trained again: a long experiment that stopped half-way goes on
where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from featcodec.eval.data import EvalData, synthetic_eval_set
from featcodec.training.codec_module import BaseCodecModule
from featcodec.training.datasets import SyntheticScenesDataModule
from featcodec.training.task import TaskModule

log = logging.getLogger(__name__)
"""Progress lines (the CLI shows them; a library user configures logging)."""


@dataclass
class SceneRun:
    """What the experiments on the embedded synthetic scenes share: the scenes, the task
    network's and the λ sweep's epochs, and the codec width."""

    out: str = "runs/scenes"
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
    seed: int = 0
    progress: bool = True

    def data(self) -> SyntheticScenesDataModule:
        """The training / validation / test scenes."""
        return SyntheticScenesDataModule(
            image_size=self.image_size,
            train_size=self.train_size,
            val_size=self.val_size,
            test_size=self.test_size,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    def test_set(self) -> EvalData:
        """The test scenes that every point is measured on."""
        return synthetic_eval_set("test", self.test_size, self.image_size, self.seed)

    def task_network(
        self, data: SyntheticScenesDataModule, root: Path, resume: bool = False
    ) -> Path:
        """Train the scene classifier (``<root>/tasknet.ckpt``); returns its checkpoint."""
        ckpt = root / "tasknet.ckpt"
        fit_or_reuse(
            lambda: TaskModule(num_classes=data.num_classes),
            data,
            ckpt,
            self.task_epochs,
            root,
            progress=self.progress,
            resume=resume,
        )
        return ckpt


def trainer(name: str, epochs: int, root: Path, progress: bool = True) -> pl.Trainer:
    """A Lightning trainer logging to ``<root>/logs/<name>``; GPU when there is one."""
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=1,
        logger=TensorBoardLogger(root / "logs", name=name, version=""),
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )


def reusable(
    ckpt: Path, module: pl.LightningModule, data: pl.LightningDataModule, epochs: int
) -> bool:
    """Whether ``ckpt`` exists and was trained as ``module`` on ``data`` for ``epochs``.

    Read weights-only: a file that needs anything but tensors and plain data to unpickle (a
    planted one, say) is not reused, and never runs code."""
    if not ckpt.is_file():
        return False
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable or not weights-only: train afresh
        return False
    if not isinstance(saved, dict):
        return False
    return (
        saved.get("epoch") == epochs
        and saved.get("hyper_parameters") == dict(module.hparams)
        and saved.get("datamodule_hyper_parameters") == dict(data.hparams)
    )


def fit_or_reuse(
    build: Callable[[], pl.LightningModule],
    data: pl.LightningDataModule,
    ckpt: Path,
    epochs: int,
    root: Path,
    *,
    progress: bool = True,
    resume: bool = False,
) -> bool:
    """Train ``build()`` for ``epochs`` and save it to ``ckpt``; with ``resume``, keep a
    checkpoint already there when its hyper-parameters match. Returns whether it trained."""
    module = build()
    if resume and reusable(ckpt, module, data, epochs):
        log.info(f"      reusing {ckpt}")
        return False
    fit = trainer(ckpt.stem, epochs, root, progress)
    fit.fit(module, data)
    fit.save_checkpoint(ckpt)
    return True


def lambda_sweep(
    data: pl.LightningDataModule,
    root: Path,
    prefix: str,
    lambdas: Sequence[float],
    epochs: int,
    finetune_epochs: int,
    *,
    progress: bool = True,
    resume: bool = False,
    label: str = "",
    **module: Any,
) -> list[tuple[float, Path]]:
    """Base codecs ``<root>/<prefix>-lambda<λ>.ckpt`` from the highest λ down.

    ``module`` holds the :class:`~training.codec_module.BaseCodecModule` arguments shared by
    every point (task checkpoint, architecture, β, …).
    """
    out: list[tuple[float, Path]] = []
    previous: Path | None = None
    ordered = sorted(lambdas, reverse=True)
    for i, lmbda in enumerate(ordered):
        log.info(f"{label}base codec {i + 1}/{len(ordered)}, λ={lmbda:g}")
        ckpt = root / f"{prefix}-lambda{lmbda:g}.ckpt"
        init = str(previous) if previous else None
        fit_or_reuse(
            lambda lmbda=lmbda, init=init: BaseCodecModule(lmbda=lmbda, init_codec=init, **module),
            data,
            ckpt,
            finetune_epochs if previous else epochs,
            root,
            progress=progress,
            resume=resume,
        )
        out.append((lmbda, ckpt))
        previous = ckpt
    return out
