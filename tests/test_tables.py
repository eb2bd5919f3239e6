"""Coding tables stored in checkpoints (codec/tables.py): a rebuilt codec codes with the
integers its checkpoint carries, never recomputed from float math; altered or malformed tables
are refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from featcodec.codec.checkpoint import seal
from featcodec.codec.errors import CheckpointError
from featcodec.codec.facade import Codec, default_arch

TINY = {"name": "hyperprior", "N": 16, "M": 16, "attention": False}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Codec, Path]:
    torch.manual_seed(0)
    codec = Codec.build(default_arch(codec=TINY)).eval()
    path = tmp_path_factory.mktemp("tables") / "codec.ckpt"
    codec.save(path)
    return codec, path


def test_a_rebuilt_codec_codes_with_the_stored_tables(
    saved: tuple[Codec, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    codec, path = saved
    meta = torch.load(path, weights_only=True)["featcodec"]
    assert set(meta["coding_tables"]) == {"base.entropy_z", "base.entropy_y"}

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("tables recomputed instead of read from the checkpoint")

    monkeypatch.setattr(EntropyBottleneck, "update", refuse)
    monkeypatch.setattr(GaussianConditional, "update", refuse)
    rebuilt = Codec.from_checkpoint(path)
    x = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(1))
    data = rebuilt.encode(x)
    monkeypatch.undo()
    assert data == codec.encode(x)
    assert torch.equal(rebuilt.decode(data).features, codec.decode(data).features)


def test_tables_follow_the_parameters(saved: tuple[Codec, Path]) -> None:
    """Stored tables are used only while the factorized model's parameters are those they
    were built for; a training step makes the model build its own again."""
    _, path = saved
    rebuilt = Codec.from_checkpoint(path)
    coder = rebuilt.base.entropy_z
    stored = coder.coding_tables()
    with torch.no_grad():
        coder.quantiles.add_(0.5)
    assert coder.coding_tables() is not stored


def _tamper(path: Path, out: Path, edit, reseal: bool) -> Path:
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt["featcodec"]["coding_tables"])
    if reseal:  # as an attacker who recomputes the digest would
        seal(ckpt)
    torch.save(ckpt, out)
    return out


def test_altered_tables_are_refused(saved: tuple[Codec, Path], tmp_path: Path) -> None:
    _, path = saved

    def bump(tables: dict) -> None:
        tables["base.entropy_y"]["cdf"][5] += 1

    with pytest.raises(CheckpointError, match="do not match the checkpoint's digest"):
        Codec.from_checkpoint(_tamper(path, tmp_path / "a.ckpt", bump, reseal=False))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["base.entropy_y"]["cdf"].__setitem__(3, 70000), "not increasing|from 0"),
        (lambda t: t["base.entropy_y"]["length"].__setitem__(0, 1), "length is out of range"),
        (
            lambda t: t["base.entropy_y"].__setitem__("cdf", t["base.entropy_y"]["cdf"][:-1]),
            "do not add up",
        ),
        (lambda t: t.__setitem__("base.nowhere", t.pop("base.entropy_z")), "unknown entropy"),
        (lambda t: t["base.entropy_z"].pop("built_for"), "no parameter digest"),
        (lambda t: t["base.entropy_y"].__setitem__("offset", torch.zeros(3)), "malformed"),
    ],
    ids=["cdf", "length", "sum", "name", "digest", "dtype"],
)
def test_malformed_tables_are_refused_with_one_line(
    saved: tuple[Codec, Path], tmp_path: Path, edit, message: str
) -> None:
    _, path = saved
    forged = _tamper(path, tmp_path / "b.ckpt", edit, reseal=True)
    with pytest.raises(CheckpointError, match=message) as e:
        Codec.from_checkpoint(forged)
    assert "\n" not in str(e.value) and str(forged) in str(e.value)
