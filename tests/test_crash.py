"""Crash safety: ``kill -9`` of ``encode``, ``decode`` and ``train`` at random moments leaves
no partial output file, a resumable last checkpoint, and no temporary file once the next run
has written beside it."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from featcodec.codec import bitstream

ROOT = Path(__file__).resolve().parents[1]


def _listing(folder: Path) -> set[tuple[str, int]]:
    if not folder.exists():
        return set()
    found = set()
    for p in folder.iterdir():
        try:
            found.add((p.name, p.stat().st_mtime_ns))
        except FileNotFoundError:  # a temporary file renamed meanwhile
            pass
    return found


def _kill_at(args: list[str], delay: float, cwd: Path, watch: Path | None = None) -> int:
    """Run ``featcodec ARGS`` and ``kill -9`` it ``delay`` seconds after it starts, or, with
    ``watch``, ``delay`` seconds after the first file appears in that folder (so the kill falls
    while outputs are being written, not during the imports)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "featcodec", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if watch is not None:
        before = _listing(watch)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if _listing(watch) != before:  # a file appeared, or one was rewritten
                break
            time.sleep(0.02)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


@pytest.mark.slow
def test_kill_during_encode_and_decode_leaves_only_whole_files(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
            images / f"{i:02d}.png"
        )
    streams, decoded = tmp_path / "streams", tmp_path / "decoded"
    draw = random.Random(1)
    encode = ["encode", str(images), "-c", str(tiny_checkpoint), "-o", str(streams), "--overwrite"]
    codes = []
    for _ in range(2):  # killed while the streams are being written
        codes.append(_kill_at(encode, draw.uniform(0.0, 0.6), tmp_path, watch=streams))
        for f in streams.glob("*.fcb") if streams.exists() else []:
            bitstream.read(f)  # every stream there is whole (else BitstreamError)
    assert _kill_at(encode, 300, tmp_path) == 0
    assert len(list(streams.glob("*.fcb"))) == 24 and _leftovers(streams) == []
    decode = ["decode", str(streams), "-c", str(tiny_checkpoint), "-o", str(decoded)]
    for _ in range(2):
        codes.append(
            _kill_at([*decode, "--overwrite"], draw.uniform(0.0, 0.6), tmp_path, watch=decoded)
        )
        for f in decoded.glob("*.pt") if decoded.exists() else []:
            torch.load(f, weights_only=True)  # whole files only
    assert _kill_at([*decode, "--overwrite"], 300, tmp_path) == 0
    assert len(list(decoded.glob("*.pt"))) == 24 and _leftovers(decoded) == []
    assert codes.count(-signal.SIGKILL) >= 3, codes  # most runs were killed mid-way


@pytest.mark.slow
def test_kill_during_training_leaves_a_resumable_last_checkpoint(tmp_path: Path) -> None:
    cfg = yaml.safe_load((ROOT / "configs" / "tasknet.yaml").read_text())
    cfg["trainer"].update(max_epochs=40, enable_progress_bar=False, limit_val_batches=1)
    cfg["trainer"]["logger"] = False
    ckpt_dir = tmp_path / "ckpt"
    cfg["trainer"]["callbacks"] = [
        {
            "class_path": "featcodec.training.LastCheckpoint",
            "init_args": {"dirpath": str(ckpt_dir), "every_n_train_steps": 1},
        }
    ]
    cfg["data"]["init_args"].update(image_size=32, train_size=16, val_size=4, batch_size=4)
    config = tmp_path / "tasknet.yaml"
    config.write_text(yaml.safe_dump(cfg))
    last = ckpt_dir / "last.ckpt"
    draw = random.Random(2)
    steps = []
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "featcodec", "train", "--config", str(config)]
            + (["--ckpt_path", str(last)] if last.exists() else []),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = last.stat().st_mtime_ns if last.exists() else None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # until this run writes
            if last.exists() and last.stat().st_mtime_ns != before:
                break
            time.sleep(0.1)
        time.sleep(draw.uniform(0.2, 1.5))  # then a random moment, writes under way or not
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = torch.load(last, weights_only=True)  # always a whole checkpoint
        steps.append(saved["global_step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # each run resumed the last
    assert all(p.suffix == ".ckpt" or p.name.endswith(".tmp") for p in ckpt_dir.iterdir())
