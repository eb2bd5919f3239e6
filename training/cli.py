"""``featcodec train``: LightningCLI over the project's Lightning modules and data modules.

The config names the module by class path, so one command trains the task network
(``configs/tasknet.yaml``) and the codecs (``configs/quickstart.yaml``); any value can be
overridden on the command line, e.g. ``--model.lmbda 0.5 --trainer.max_epochs 2``.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from codec.errors import FeatcodecError


def _our_error(error: BaseException) -> FeatcodecError | None:
    """The project error behind ``error``, which jsonargparse wraps when a class fails to
    instantiate (a missing task checkpoint, say)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, FeatcodecError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def train(argv: list[str]) -> None:
    """Run ``fit`` with the YAML config and overrides in ``argv``."""
    saved = sys.argv
    sys.argv = [f"{saved[0]} train"]  # the arguments come from argv, not the process
    try:
        LightningCLI(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=["fit", *argv],
            save_config_kwargs={"overwrite": True},
        )
    except Exception as e:
        ours = _our_error(e)
        if ours is None:
            raise
        raise ours from None
    finally:
        sys.argv = saved
