"""Coding tables stored in checkpoints: the integers every device codes with.

An entropy model's quantized CDFs are computed from float math (compressai's ``update``: the
factorized model's density network, the Gaussian's ``erfc``), and a machine whose libraries
round one count differently would code with other tables. So a checkpoint carries the tables
its model codes with, as integers, covered by its digest (:func:`codec.checkpoint.seal`), and a
model rebuilt from it codes with exactly those — on any machine — until its parameters change
(a factorized model's tables remember the parameters they were built for). Checkpoints written
before this carry none: their tables are computed on the CPU, as before.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from featcodec.codec.entropy import CodingTables, FactorizedCoder, GaussianCoder
from featcodec.codec.errors import CheckpointError

MAX_TABLES = 1 << 12
MAX_TABLE_LENGTH = (1 << 16) + 2
PRECISION = 1 << 16


def coders(model: nn.Module) -> dict[str, FactorizedCoder | GaussianCoder]:
    """Every entropy model of ``model``, by its module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, FactorizedCoder | GaussianCoder)
    }


def tables_entry(model: nn.Module) -> dict[str, dict[str, Tensor]]:
    """The coding tables of every entropy model of ``model``, for a checkpoint."""
    out = {}
    for name, coder in coders(model).items():
        t = coder.coding_tables()
        used = np.arange(t.cdf_array.shape[1])[None, :] < t.length_array[:, None]
        item = {
            "cdf": torch.from_numpy(t.cdf_array[used].copy()),  # the rows' used entries, joined
            "length": torch.from_numpy(t.length_array.copy()),
            "offset": torch.from_numpy(t.offset_array.copy()),
        }
        if isinstance(coder, FactorizedCoder):
            digest = bytearray(coder.parameter_digest())
            item["built_for"] = torch.tensor(list(digest), dtype=torch.uint8)
        out[name] = item
    return out


def install_tables(model: nn.Module, entry: object) -> None:
    """Make ``model``'s entropy models code with the tables of a checkpoint's ``entry``
    (:func:`tables_entry`), after checking that they are tables: :class:`CheckpointError`
    naming what is wrong otherwise (a checkpoint is untrusted input)."""
    if not isinstance(entry, dict):
        raise CheckpointError("its coding tables are not a mapping")
    mine = coders(model)
    for name, item in entry.items():
        coder = mine.get(name) if isinstance(name, str) else None
        if coder is None or not isinstance(item, dict):
            raise CheckpointError(f"coding tables for an unknown entropy model {name!r}")
        tables = _tables(name, item)
        if isinstance(coder, FactorizedCoder):
            built_for = item.get("built_for")
            if not isinstance(built_for, Tensor) or built_for.dtype != torch.uint8:
                raise CheckpointError(f"coding tables of {name}: no parameter digest")
            if tables.cdf_array.shape[0] != coder.channels:
                raise CheckpointError(f"coding tables of {name}: not one table per channel")
            coder.use_tables(tables, bytes(built_for.tolist()))
        else:
            if tables.cdf_array.shape[0] != coder.levels:
                raise CheckpointError(f"coding tables of {name}: not one table per scale level")
            coder.use_tables(tables)


def _tables(name: str, item: dict) -> CodingTables:
    flat, length, offset = (item.get(k) for k in ("cdf", "length", "offset"))
    ok = all(isinstance(t, Tensor) and t.dtype == torch.int32 for t in (flat, length, offset))
    if not ok or flat.dim() != 1 or length.dim() != 1 or offset.shape != length.shape:
        raise CheckpointError(f"coding tables of {name}: malformed (int32 cdf, length, offset)")
    rows = len(length)
    if not 1 <= rows <= MAX_TABLES:
        raise CheckpointError(f"coding tables of {name}: {rows} tables")
    if bool((length < 2).any()) or bool((length > MAX_TABLE_LENGTH).any()):
        raise CheckpointError(f"coding tables of {name}: a table length is out of range")
    if int(length.long().sum()) != len(flat):
        raise CheckpointError(f"coding tables of {name}: the lengths do not add up to the CDFs")
    stride = int(length.max())
    used = torch.arange(stride)[None, :] < length[:, None]
    cdf = torch.zeros(rows, stride, dtype=torch.int32)
    cdf[used] = flat
    steps = cdf[:, 1:] - cdf[:, :-1]
    inner = used[:, 1:]
    last = cdf.gather(1, (length - 1).long()[:, None])[:, 0]
    if bool((cdf[:, 0] != 0).any()) or bool((last != PRECISION).any()):
        raise CheckpointError(f"coding tables of {name}: a CDF does not run from 0 to 2^16")
    if bool((steps[inner] <= 0).any()):
        raise CheckpointError(f"coding tables of {name}: a CDF is not increasing")
    arrays = [np.ascontiguousarray(t.numpy(), dtype=np.int32) for t in (cdf, length, offset)]
    return CodingTables.of_arrays(*arrays)
