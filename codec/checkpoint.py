"""Checkpoints of image and video codecs: the ``featcodec`` entry that makes a checkpoint
loadable from the file alone, writing, reading (weights-only) and rebuilding.

A checkpoint is a ``torch.save`` dict (also Lightning's training checkpoints) with
``state_dict`` and a ``featcodec`` entry: ``format``, ``kind`` ("codec", "video" or "task"),
``arch`` (the architecture dict, :mod:`codec.config`), ``state_prefix`` (where the model's
weights are inside ``state_dict``) and ``weights_digest``, a hash of those weights checked on
load, so a corrupted or altered file is refused (:func:`seal`). Format 2 names the weights of
the transforms after compressai's layers; format 1 checkpoints (older) are read too, their
weights renamed on load (:func:`upgrade_state_dict`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from featcodec.codec.errors import CheckpointError
from featcodec.codec.files import atomic_path
from featcodec.codec.fingerprint import legacy_names, weights_digest
from featcodec.codec.tables import install_tables, tables_entry

CHECKPOINT_FORMAT = 2
"""The format this build writes."""
READABLE_FORMATS = (1, 2)
"""The formats this build reads."""


def checkpoint_entry(kind: str, arch: dict[str, Any], state_prefix: str) -> dict[str, Any]:
    """The ``featcodec`` entry of a checkpoint: what :func:`load_checkpoint` validates and
    :func:`rebuild` rebuilds the model from (weights under ``state_prefix`` in its state dict)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "arch": copy.deepcopy(arch),
        "state_prefix": state_prefix,
    }


def seal(checkpoint: dict[str, Any], model: nn.Module | None = None) -> dict[str, Any]:
    """Record in ``checkpoint["featcodec"]`` the coding tables of ``model`` (the codec the
    checkpoint describes, when given: :mod:`codec.tables`) and the digest of the weights and
    tables it describes (the weights under its ``state_prefix``); :func:`load_checkpoint`
    checks it. Returns ``checkpoint``."""
    meta = checkpoint["featcodec"]
    if model is not None:
        meta["coding_tables"] = tables_entry(model)
    meta["weights_digest"] = _digest(
        checkpoint["state_dict"], meta.get("state_prefix", ""), meta.get("coding_tables")
    )
    return checkpoint


def _digest(state: dict[str, Any], prefix: str, tables: Any = None) -> str:
    mine = {k: v for k, v in state.items() if k.startswith(prefix) and isinstance(v, Tensor)}
    if isinstance(tables, dict):  # checkpoints written before tables were stored have none
        for name, item in tables.items():
            if isinstance(item, dict):
                mine.update(
                    {
                        f"coding_tables/{name}/{k}": v
                        for k, v in item.items()
                        if isinstance(v, Tensor)
                    }
                )
    return weights_digest(None, mine).hex()


def save_checkpoint(model: Any, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (anything with ``checkpoint_entry`` and ``state_dict``) as a standalone
    checkpoint, sealed (:func:`seal`), atomically."""
    ckpt = seal({"featcodec": model.checkpoint_entry(""), "state_dict": model.state_dict()}, model)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def upgrade_state_dict(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the format-1 names of ``model``'s weights replaced by today's."""
    current = {old: new for new, old in legacy_names(model).items()}
    return {current.get(k, k): v for k, v in state.items()}


def rebuild(
    path: str | os.PathLike[str], ckpt: dict[str, Any], build: Callable[[dict[str, Any]], Any]
) -> Any:
    """The model of a loaded checkpoint: ``build(arch)``, then its weights, in eval mode;
    :class:`CheckpointError` naming ``path`` when either does not fit."""
    meta = ckpt["featcodec"]
    try:
        model = build(meta["arch"])
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the architecture ({e})") from None
    prefix = meta.get("state_prefix", "")
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    try:
        model.load_state_dict(upgrade_state_dict(model, state))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the architecture ({first})") from None
    if "coding_tables" in meta:
        try:
            install_tables(model, meta["coding_tables"])
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
    return model.eval()


def load_checkpoint(path: str | os.PathLike[str], kind: str | tuple[str, ...]) -> dict[str, Any]:
    """Load a featcodec checkpoint of ``kind`` ("codec", "video" or "task", or one of several)
    on the CPU, weights-only (nothing in the file runs), validated."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not ours"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({reason[:120]})") from None
    meta = ckpt.get("featcodec") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a featcodec checkpoint (no 'featcodec' entry)")
    if meta.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format')} (this build reads "
            f"{', '.join(map(str, READABLE_FORMATS))})"
        )
    kinds = (kind,) if isinstance(kind, str) else kind
    if meta.get("kind") not in kinds:
        raise CheckpointError(
            f"{path} is a {meta.get('kind')} checkpoint, not a {' or '.join(kinds)} checkpoint"
        )
    prefix = meta.get("state_prefix", "")
    if not isinstance(prefix, str):
        raise CheckpointError(f"{path}: its state_prefix is not a name")
    digest = meta.get("weights_digest")  # checkpoints written before digests have none
    tables = meta.get("coding_tables")
    if digest is not None and digest != _digest(ckpt["state_dict"], prefix, tables):
        raise CheckpointError(
            f"{path}: the weights do not match the checkpoint's digest (a corrupt or altered file)"
        )
    return ckpt
