"""Trains a tiny base codec with DDP (gloo, CPU processes) or in one process, validates it,
and writes what this process holds: run by tests/test_ddp.py as a script, because the DDP
launcher starts the other ranks by running the script again. When ``OUT/stitch`` exists (with
the task checkpoints of :func:`ddp_stitch_run.make_networks`), the same processes then start
a stitch from its regression (:mod:`ddp_stitch_run`): one launch of the processes for both.

    python tests/ddp_run.py OUT DEVICES
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from ddp_stitch_run import main as stitch_main
from lightning.pytorch.callbacks import Callback

from featcodec.codec.fingerprint import weights_digest
from featcodec.training import BaseCodecModule
from featcodec.training.datasets import SyntheticScenesDataModule

warnings.filterwarnings("ignore")


class AuxTrace(Callback):
    """The aux (quantile) loss after every training step."""

    def __init__(self) -> None:
        self.aux: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        with torch.no_grad():
            self.aux.append(float(pl_module.codec.base.aux_loss()))


def data() -> SyntheticScenesDataModule:
    return SyntheticScenesDataModule(
        image_size=32, train_size=32, val_size=8, test_size=8, batch_size=4, seed=0
    )


def module() -> BaseCodecModule:
    torch.manual_seed(0)
    return BaseCodecModule(N=16, M=16, attention=False, lmbda=1.0, aux_lr=1e-2)


def trainer(devices: int, callbacks: list[Callback]) -> pl.Trainer:
    return pl.Trainer(
        strategy="ddp" if devices > 1 else "auto",
        accelerator="cpu",
        devices=devices,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def main(out: Path, devices: int) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    trace = AuxTrace()
    run = trainer(devices, [trace])
    net = module()
    run.fit(net, data())
    run.save_checkpoint(out / "trained.ckpt")
    validated = run.validate(net, data(), verbose=False)[0]
    result = {
        "world_size": run.world_size,
        "digest": weights_digest(None, net.codec.state_dict()).hex(),
        "aux": trace.aux,
        "val_bpp": validated["val/bpp"],
        "val_accuracy": validated["val/accuracy"],
    }
    (out / f"rank{run.global_rank}-of-{devices}.json").write_text(json.dumps(result))
    if (out / "stitch").is_dir():
        stitch_main(out / "stitch", devices)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
