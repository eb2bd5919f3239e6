"""Starts a stitch with the closed-form regression (``init="regression"``) under DDP (gloo, CPU
processes) or in one process, and writes what this process holds right after the regression
start: run by tests/test_ddp_stitch.py as a script, because the DDP launcher starts the other
ranks by running the script again.

    python tests/ddp_stitch_run.py OUT DEVICES

``OUT`` must hold network A's and B's task checkpoints (``a.ckpt``, ``b.ckpt``: the test
writes them with :func:`make_networks` before launching). Each rank writes
``rank{R}-of-{DEVICES}.json``: the world size, ``E``'s weight and bias as they stand when the
first training epoch starts (after ``on_train_start``'s regression, before any step), and the
indices of the images the regression read on that rank (the DistributedSampler's share).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from conftest import register_fixture_backbone
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from featcodec.training import StitchModule, TaskModule
from featcodec.training.datasets import SyntheticScenes, collate_scenes

warnings.filterwarnings("ignore")

N_IMAGES = 24  # 12 per rank with 2 processes
BATCH = 4
FIT_BATCHES = 2  # the regression reads 2 of each rank's 3 batches: 8 images per rank
SPLIT_AT = "layer1"  # 12 channels, stride 4: 8 × 8 positions per 32 px image
RIDGE = 1e-3


def images() -> Tensor:
    """The ``N_IMAGES`` synthetic images (N, 3, 32, 32), always the same."""
    scenes = SyntheticScenes("train", N_IMAGES, 32, 0)
    return collate_scenes([scenes[i] for i in range(N_IMAGES)])["image"]


def save_task(module: TaskModule, path: Path) -> str:
    """A task checkpoint as TaskModule writes it (without a trainer)."""
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return str(path)


def make_networks(out: Path) -> None:
    """Two different random tiny task networks, ``a.ckpt`` and ``b.ckpt`` in ``out``."""
    name = register_fixture_backbone()
    for seed, file in ((0, "a.ckpt"), (1, "b.ckpt")):
        torch.manual_seed(seed)
        save_task(TaskModule(backbone=name), out / file)


def module(out: Path) -> StitchModule:
    """The stitch from A to B at ``SPLIT_AT``, starting from the regression."""
    register_fixture_backbone()
    return StitchModule(
        str(out / "b.ckpt"),
        network_a=str(out / "a.ckpt"),
        split_at=SPLIT_AT,
        init="regression",
        ridge=RIDGE,
        fit_batches=FIT_BATCHES,
        lr=0.0,
    )


class Recorded(Dataset):
    """The images with labels, recording every index read (in this process)."""

    def __init__(self, images: Tensor) -> None:
        self.images = images
        self.labels = torch.arange(len(images)) % 5
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        self.seen.append(int(i))
        return {"image": self.images[i], "label": self.labels[i]}


class AfterRegressionStart(Callback):
    """``E`` and the indices read so far when the first epoch starts: the fit loop calls the
    callbacks' ``on_train_start`` *before* the module's, so this looks one hook later, when
    the regression start is done and no batch of the epoch has been read yet."""

    def __init__(self, dataset: Recorded) -> None:
        self.dataset = dataset
        self.result: dict | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: StitchModule) -> None:
        if self.result is None:
            self.result = {
                "fitted": pl_module.fitted,
                "weight": pl_module.stitch.weight[..., 0, 0].tolist(),
                "bias": pl_module.stitch.bias.tolist(),
                "indices": list(self.dataset.seen),
            }


def main(out: Path, devices: int) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    dataset = Recorded(images())
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        collate_fn=collate_scenes,
        generator=torch.Generator().manual_seed(0),
    )
    probe = AfterRegressionStart(dataset)
    run = pl.Trainer(
        strategy="ddp" if devices > 1 else "auto",
        accelerator="cpu",
        devices=devices,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[probe],
    )
    run.fit(module(out), loader)
    assert probe.result is not None
    result = {"world_size": run.world_size, "rank": run.global_rank, **probe.result}
    (out / f"rank{run.global_rank}-of-{devices}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
