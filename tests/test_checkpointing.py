"""Checkpoints that cannot rot and runs that survive a crash: weight digests checked on load,
a resumable last.ckpt written atomically during training, no temporary file left behind."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import quiet_trainer
from lightning.pytorch.callbacks import Callback

from featcodec.codec.checkpoint import load_checkpoint
from featcodec.codec.errors import CheckpointError
from featcodec.codec.facade import Codec
from featcodec.codec.files import atomic_write, remove_stale_temporaries
from featcodec.training import LastCheckpoint, TaskModule
from featcodec.training.datasets import SyntheticScenesDataModule


def test_altered_weights_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    assert "weights_digest" in ckpt["featcodec"]
    key = next(k for k in ckpt["state_dict"] if k.startswith("base.g_a"))
    ckpt["state_dict"][key].view(-1)[:16] *= -1  # 64 bytes of one weight, sign-flipped
    path = tmp_path / "altered.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not match the checkpoint's digest"):
        Codec.from_checkpoint(path)


def test_inverted_bytes_in_the_file_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = bytearray(tiny_checkpoint.read_bytes())
    with zipfile.ZipFile(tiny_checkpoint) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    n, m = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + n + m + info.file_size // 2
    data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
    path = tmp_path / "inverted.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):  # the digest (or the archive's own check) refuses it
        load_checkpoint(path, kind="codec")


class _Crash(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == 3:
            raise RuntimeError("simulated crash")


def test_a_crashed_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    data = SyntheticScenesDataModule(image_size=32, train_size=16, val_size=4, batch_size=4)
    last = LastCheckpoint(tmp_path, every_n_train_steps=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        quiet_trainer(epochs=2, limit_val_batches=1, callbacks=[last, _Crash()]).fit(
            TaskModule(), data
        )
    path = tmp_path / "last.ckpt"
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 2  # written during the run, before the crash
    assert load_checkpoint(path, kind="task")["featcodec"]["weights_digest"]
    resumed = quiet_trainer(
        epochs=2, limit_val_batches=1, callbacks=[LastCheckpoint(tmp_path, every_n_train_steps=2)]
    )
    resumed.fit(TaskModule(), data, ckpt_path=str(path))
    assert resumed.global_step == 8  # 2 epochs × 4 batches
    assert torch.load(path, weights_only=True)["global_step"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left


def test_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".a.fcb.4194303.deadbeef.tmp"  # a pid above any pid_max in use
    mine = tmp_path / f".b.fcb.{os.getpid()}.cafebabe.tmp"  # a write in progress here
    other = tmp_path / ".notes.tmp"  # not ours
    for p in (dead, mine, other):
        p.write_bytes(b"x")
    atomic_write(tmp_path / "c.fcb", b"data")
    assert not dead.exists() and mine.exists() and other.exists()
    assert (tmp_path / "c.fcb").read_bytes() == b"data"
    assert remove_stale_temporaries(tmp_path) == []
