"""A Lightning trainer for tests: CPU, no logger, checkpoints, bars or sanity checks."""

from __future__ import annotations

import lightning.pytorch as pl


def quiet_trainer(steps: int = -1, epochs: int | None = None, **kw: object) -> pl.Trainer:
    """Train for ``steps`` optimizer steps (two per batch for the codec modules, which step a
    main and an aux optimizer) or ``epochs`` epochs."""
    return pl.Trainer(
        max_steps=steps,
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )
