"""DDP is verified: a codec trained with ``strategy="ddp"`` on two CPU processes (gloo) keeps
identical weights on both ranks, its aux loss falls, and its logged validation rate and metric
equal the single-process figures of the same weights on the same data. In the same processes,
the stitch's regression start: each rank accumulates the regression ``φ_B ≈ E·φ_A + b`` over
its own share of the images (the DistributedSampler's), the normal equations are summed over
processes and solved, so both ranks start from the same ``E``: the one-process regression over
the union of their images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from featcodec.training import BaseCodecModule

SCRIPT = Path(__file__).with_name("ddp_run.py")


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch of two DDP processes: the codec, then the stitch (tests/ddp_run.py)."""
    from ddp_stitch_run import make_networks

    out = tmp_path_factory.mktemp("ddp")
    (out / "stitch").mkdir()
    make_networks(out / "stitch")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:training a codec in front of an untrained")
def test_ddp_on_two_cpu_processes(launched: Path) -> None:
    tmp_path = launched
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


def _regression(out: Path, images: Tensor) -> tuple[Tensor, Tensor]:
    """``E``'s weight (Cout, Cin) and bias fitted in one process (no trainer) on ``images``."""
    from ddp_stitch_run import BATCH, module

    single = module(out)
    single.fit_regression({"image": images[i : i + BATCH]} for i in range(0, len(images), BATCH))
    return single.stitch.weight[..., 0, 0].detach().clone(), single.stitch.bias.detach().clone()


@pytest.mark.slow
def test_the_stitch_regression_start_is_summed_over_ddp_processes(launched: Path) -> None:
    from ddp_stitch_run import BATCH, FIT_BATCHES, N_IMAGES, images

    tmp_path = launched / "stitch"
    ranks = [json.loads((tmp_path / f"rank{r}-of-2.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(r["fitted"] for r in ranks)

    # each rank's regression read its own FIT_BATCHES batches: different images on each
    seen = [r["indices"] for r in ranks]
    assert all(len(s) == len(set(s)) == FIT_BATCHES * BATCH for s in seen), seen
    assert not set(seen[0]) & set(seen[1]), seen
    assert all(0 <= i < N_IMAGES for s in seen for i in s)

    weights = [torch.tensor(r["weight"]) for r in ranks]
    biases = [torch.tensor(r["bias"]) for r in ranks]
    assert torch.equal(weights[0], weights[1]) and torch.equal(biases[0], biases[1])

    # the same regression in one process over the union of both ranks' images
    data = images()
    weight, bias = _regression(tmp_path, data[seen[0] + seen[1]])
    scale = float(weight.abs().max())
    tol = 1e-4 * scale
    torch.testing.assert_close(weights[0], weight, rtol=0, atol=tol)
    torch.testing.assert_close(biases[0], bias, rtol=0, atol=tol)

    # which is not what either rank would fit on its share alone: the sum over processes matters
    for share in seen:
        alone, _ = _regression(tmp_path, data[share])
        assert float((alone - weight).abs().max()) > 100 * tol
