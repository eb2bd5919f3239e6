"""``featcodec train``: LightningCLI over the project's Lightning modules and data modules.

The config names the module by class path, so one command trains the task network
(``configs/tasknet.yaml``) and the codecs (``configs/quickstart.yaml``); any value can be
overridden on the command line, e.g. ``--model.lmbda 0.5 --trainer.max_epochs 2``.
"""

from __future__ import annotations

import re
import sys
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from featcodec.codec.errors import FeatcodecError

_OLD_CLASS_PATH = re.compile(r"(class_path:\s*)(training|codec|models|eval)\.")


def upgrade_config(text: str) -> str:
    """A config written before the packages moved under ``featcodec`` (``class_path:
    training.TaskModule``) with today's class paths (``featcodec.training.TaskModule``)."""
    return _OLD_CLASS_PATH.sub(r"\1featcodec.\2.", text)


def _upgraded_configs(argv: list[str], folder: Path) -> list[str]:
    """``argv`` with each ``--config FILE`` that uses old class paths replaced by an upgraded
    copy in ``folder`` (a :class:`DeprecationWarning` names it; the file itself is kept)."""
    out = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg not in ("--config", "-c"):
            continue
        path = Path(argv[i + 1])
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue  # LightningCLI reports it
        new = upgrade_config(text)
        if new != text:
            warnings.warn(
                f"{path} names classes by their old paths (training.…); read as "
                "featcodec.training.… — update the file (see the README)",
                DeprecationWarning,
                stacklevel=3,
            )
            copy = folder / f"{i}-{path.name}"
            copy.write_text(new)
            out[i + 1] = str(copy)
    return out


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
        with tempfile.TemporaryDirectory(prefix="featcodec-config-") as folder:
            LightningCLI(
                pl.LightningModule,
                pl.LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=["fit", *_upgraded_configs(argv, Path(folder))],
                save_config_kwargs={"overwrite": True},
            )
    except Exception as e:
        ours = _our_error(e)
        if ours is None:
            raise
        raise ours from None
    finally:
        sys.argv = saved
