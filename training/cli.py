"""``featcodec train``: LightningCLI over the project's Lightning modules and data modules.

The config names the module by class path, so one command trains the task network
(``configs/tasknet.yaml``) and the codecs (``configs/quickstart.yaml``); any value can be
overridden on the command line, e.g. ``--model.lmbda 0.5 --trainer.max_epochs 2``.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI


def train(argv: list[str]) -> None:
    """Run ``fit`` with the YAML config and overrides in ``argv``."""
    LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["fit", *argv],
        save_config_kwargs={"overwrite": True},
    )
