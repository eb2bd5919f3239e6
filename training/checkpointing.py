"""A resumable ``last.ckpt`` while training runs.

Lightning's ``ModelCheckpoint`` with ``save_top_k: 0, save_last: true`` writes ``last.ckpt``
only when training ends, and its writer truncates the file before writing it: a crash, or a
``kill -9``, loses the run or leaves a torn file. :class:`LastCheckpoint` writes
``<dirpath>/last.ckpt`` every ``every_n_train_steps`` steps, at the end of each epoch and when
training ends, each time to a temporary file beside it that is then renamed over it
(:func:`codec.files.atomic_path`): at any moment the file is the last complete checkpoint,
resumable with ``featcodec train --config … --ckpt_path <dirpath>/last.ckpt``. Temporary
files of killed runs are removed by the next write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from featcodec.codec.files import atomic_path


class LastCheckpoint(Callback):
    """Keeps ``<dirpath>/last.ckpt`` resumable while training runs (see the module).

    Args:
        dirpath: the folder of ``last.ckpt``.
        every_n_train_steps: optimizer steps between two writes (besides each epoch's end and
            the end of training); 0 writes at epoch ends and at the end only.
        filename: the file's name.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str],
        every_n_train_steps: int = 100,
        filename: str = "last.ckpt",
    ) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"every_n_train_steps must be ≥ 0, not {every_n_train_steps}")
        self.path = Path(dirpath) / filename
        self.every = every_n_train_steps
        self._saved_at: int | None = None

    @property
    def state_key(self) -> str:
        return f"LastCheckpoint[{self.path}]"

    def save(self, trainer: pl.Trainer) -> None:
        """Write the checkpoint now (every process takes part; the first one writes)."""
        if self._saved_at == trainer.global_step:
            return
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)  # resumable: optimizers too
        else:
            trainer.save_checkpoint(self.path.with_name(".unused"), weights_only=False)
        trainer.strategy.barrier("last-checkpoint")
        self._saved_at = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if self.every and trainer.global_step and trainer.global_step % self.every == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)
