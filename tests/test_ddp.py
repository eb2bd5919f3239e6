"""DDP is verified: a codec trained with ``strategy="ddp"`` on two CPU processes (gloo) keeps
identical weights on both ranks, its aux loss falls, and its logged validation rate and metric
equal the single-process figures of the same weights on the same data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from featcodec.training import BaseCodecModule

SCRIPT = Path(__file__).with_name("ddp_run.py")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:training a codec in front of an untrained")
def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}-of-2.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # identical weights on both ranks
    for r in ranks:
        aux = r["aux"]
        assert len(aux) == 8  # 2 epochs × 16 items per rank / batches of 4
        assert all(b < a for a, b in zip(aux, aux[1:], strict=False)), aux  # the aux loss falls
    assert ranks[0]["val_bpp"] == ranks[1]["val_bpp"]  # one synchronised figure

    # the same weights validated in one process on the same 8 images
    from ddp_run import data, module, trainer

    single = module()
    state = torch.load(tmp_path / "trained.ckpt", map_location="cpu", weights_only=True)
    single.load_state_dict(state["state_dict"])
    logged = trainer(1, []).validate(single, data(), verbose=False)[0]
    assert logged["val/bpp"] == pytest.approx(ranks[0]["val_bpp"], rel=1e-6)
    assert logged["val/accuracy"] == pytest.approx(ranks[0]["val_accuracy"], abs=1e-6)
    assert isinstance(single, BaseCodecModule)
