"""Spatially sparse residual blocks (models/sparse.py) and their gather–scatter execution
(models/gather_scatter.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, resnet18, resnet50

from featcodec.models.backbones import build_backbone
from featcodec.models.sparse import (
    SparseBasicBlock,
    SparseBottleneck,
    SparsityConfig,
    anneal_p,
    count_flops,
    dilate,
    expand,
    gumbel_mask,
    sparse_blocks,
    sparsify,
)
from featcodec.models.split import split_model, split_nodes


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random batch-norm statistics and affine parameters (a fresh network's are trivial) and
    mask units whose logits vary in sign."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    for _, block in sparse_blocks(model):
        block.mask_unit.conv.weight.data.normal_(0, 0.05, generator=g)
        block.mask_unit.conv.bias.data.zero_()
    return model


def _block(kind: str, stride: int, cin: int = 8, planes: int = 4) -> nn.Module:
    if kind == "basic":
        down = None
        if stride != 1 or cin != planes:
            down = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        dense = BasicBlock(cin, planes, stride=stride, downsample=down)
        return SparseBasicBlock.from_dense(dense)
    out = planes * Bottleneck.expansion
    down = nn.Sequential(nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    return SparseBottleneck.from_dense(Bottleneck(cin, planes, stride=stride, downsample=down))


# --- masks -----------------------------------------------------------------------------------


def test_gumbel_mask_is_hard_forward_and_soft_backward() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 6, 6, requires_grad=True)
    hard = gumbel_mask(logits, temperature=0.5, noise=False)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard.detach(), (logits > 0).float())
    hard.sum().backward()
    soft = torch.sigmoid(logits.detach() / 0.5)
    assert torch.allclose(logits.grad, soft * (1 - soft) / 0.5)  # dσ(m/τ)/dm
    with pytest.raises(ValueError, match="temperature"):
        gumbel_mask(logits, temperature=0)


def test_gumbel_noise_executes_a_logit_with_probability_sigmoid() -> None:
    torch.manual_seed(0)
    logits = torch.full((20000,), 1.0)
    rate = gumbel_mask(logits).mean().item()
    assert rate == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.015)


def test_dilation_and_expansion_cover_what_a_3x3_convolution_reads() -> None:
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, 0, 2] = 1
    grown = dilate(mask)
    assert grown[0, 0].nonzero().tolist() == [[i, j] for i in (0, 1) for j in (1, 2, 3)]
    # across stride 2 onto a 9×10 input grid: output (0, 2) is centred on input (0, 4)
    spread = expand(mask, 2, (9, 10))
    assert spread.shape == (1, 1, 9, 10)
    assert spread[0, 0].nonzero().tolist() == [[i, j] for i in (0, 1) for j in (3, 4, 5)]
    # checked against the convolution itself: the input pixels whose gradient is non-zero
    x = torch.randn(1, 1, 9, 10, requires_grad=True)
    out = nn.functional.conv2d(x, torch.ones(1, 1, 3, 3), stride=2, padding=1)
    (out * mask).sum().backward()
    assert torch.equal(x.grad != 0, spread.bool())


# --- blocks ----------------------------------------------------------------------------------


def test_sparsify_shares_the_dense_layers_and_keeps_their_keys() -> None:
    dense = build_backbone("scene_resnet10")
    keys = set(dense.state_dict())
    conv = dense.layer1[0].conv1
    sparse = sparsify(dense, "layer2")
    assert sparse.layer1[0].conv1 is conv
    assert isinstance(sparse.layer2[0], SparseBasicBlock)
    assert not isinstance(sparse.layer3[0], SparseBasicBlock)
    new = set(sparse.state_dict()) - keys
    assert new and all(".mask_unit." in k for k in new)
    assert keys <= set(sparse.state_dict())
    with pytest.raises(ValueError, match="layer1, layer2"):
        sparsify(build_backbone("scene_resnet10"), "layer5")
    with pytest.raises(ValueError, match="ResNet trunk"):
        sparsify(nn.Sequential(nn.Conv2d(3, 3, 1)), "layer1")


@pytest.mark.parametrize("kind,stride", [("basic", 1), ("basic", 2), ("bottle", 1), ("bottle", 2)])
def test_full_and_empty_masks_give_the_dense_block_and_the_shortcut(kind, stride) -> None:
    torch.manual_seed(0)
    block = _randomize(_block(kind, stride)).eval()
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        dense = type(block).__mro__[2].forward(block, x)  # torchvision's own forward
        block.mask_unit.conv.bias.fill_(1e4)  # every position active
        assert torch.allclose(block(x), dense, atol=1e-5)
        block.mask_unit.conv.bias.fill_(-1e4)  # none
        assert torch.allclose(block(x), torch.relu(block.identity(x)))


@pytest.mark.parametrize("kind,stride", [("basic", 1), ("basic", 2), ("bottle", 1), ("bottle", 2)])
def test_gather_scatter_equals_the_masked_dense_block(kind, stride) -> None:
    torch.manual_seed(1)
    block = _randomize(_block(kind, stride), seed=1).eval()
    x = torch.randn(2, 8, 13, 10)
    with torch.no_grad():
        masked = block(x)
        fraction = block.mask.mean().item()
        block.execution = "gather"
        gathered = block(x)
    assert 0.2 < fraction < 0.8  # a mixed mask, not a trivial one
    assert gathered.shape == masked.shape
    assert torch.allclose(gathered, masked, atol=1e-5), (gathered - masked).abs().max()


@pytest.mark.parametrize("ctor", [resnet18, resnet50])
def test_gather_scatter_network_equals_the_masked_one(ctor) -> None:
    torch.manual_seed(0)
    model = _randomize(sparsify(ctor(num_classes=7), "layer3")).eval()
    x = torch.randn(2, 3, 70, 54)
    with torch.no_grad():
        masked = model(x)
        for _, block in sparse_blocks(model):
            block.execution = "gather"
        gathered = model(x)
    assert torch.allclose(gathered, masked, atol=1e-4 * masked.abs().max())


def test_gather_scatter_needs_eval_statistics() -> None:
    block = _block("basic", 1).eval()
    block.bn1.train()
    block.execution = "gather"
    with pytest.raises(ValueError, match="eval mode"):
        block(torch.randn(1, 8, 5, 5))


# --- FLOPs -----------------------------------------------------------------------------------


def test_block_flops_follow_the_formula() -> None:
    block = _block("basic", 1, cin=8, planes=4)
    mask = torch.zeros(2, 1, 5, 5)
    mask[0, 0, 2, 2] = 1  # one active pixel in the middle: 9 dilated pixels
    f = block.flops(mask, (5, 5))
    first, second = 9 * 8 * 4, 9 * 4 * 4
    assert f.dense == 2 * 25 * (first + second)
    assert f.executed.item() == 9 * first + 1 * second
    assert f.downsample == 2 * 25 * 8 * 4  # the 1×1 shortcut, dense
    bottle = _block("bottle", 2, cin=8, planes=4)
    out = torch.zeros(1, 1, 3, 3)
    out[0, 0, 1, 1] = 1  # centred on input (2, 2) of a 6×6 grid: 9 input pixels for conv1
    f = bottle.flops(out, (6, 6))
    assert f.executed.item() == 9 * (8 * 4) + (9 * 4 * 4 + 4 * 16)
    assert f.dense == 36 * 8 * 4 + 9 * (9 * 4 * 4 + 4 * 16)


def test_count_flops_of_a_front() -> None:
    model = build_backbone("scene_resnet10")
    dense = split_model(model, "layer2").front.eval()
    x = torch.randn(2, 3, 32, 32)
    full = count_flops(dense, x)
    # by hand: stem 7×7 conv at 16×16; layer1 two 3×3 64→64 at 8×8; layer2 3×3 64→128 and
    # 128→128 at 4×4 plus the 1×1 shortcut
    by_hand = 16 * 16 * 49 * 3 * 64 + 64 * 2 * 9 * 64 * 64 + 16 * (9 * 64 * 128 + 9 * 128 * 128)
    by_hand += 16 * 64 * 128
    assert full == {
        "dense": by_hand,
        "executed": by_hand,
        "fraction": 1.0,
        "sparse_dense": 0.0,
        "sparse_executed": 0.0,
        "sparse_fraction": 1.0,
    }
    sparse_model = sparsify(build_backbone("scene_resnet10"), "layer2")
    front = split_model(sparse_model, "layer2").front.eval()
    counted = count_flops(front, x)
    assert counted["dense"] == by_hand
    assert counted["executed"] > by_hand  # every position active, plus the mask units
    for _, block in sparse_blocks(sparse_model):
        block.mask_unit.conv.bias.data.fill_(-1e4)
    assert count_flops(front, x)["sparse_fraction"] == 0.0


# --- losses ----------------------------------------------------------------------------------


def test_anneal_goes_from_one_to_zero() -> None:
    assert anneal_p(0.0, 0.33) == 1.0
    assert 0 < anneal_p(0.1, 0.33) < 1
    assert anneal_p(0.33, 0.33) == pytest.approx(0.0, abs=1e-12)
    assert anneal_p(0.9, 0.33) == 0.0


def test_sparsity_losses() -> None:
    from featcodec.models.sparse import BlockFlops

    def flops(*fractions: float) -> list[BlockFlops]:
        return [BlockFlops(100.0, torch.tensor(100.0 * f), 0.0, 0.0) for f in fractions]

    cfg = SparsityConfig(budget=0.5, weight=2.0)
    at = cfg.terms(flops(0.5, 0.5), progress=0.0)
    assert at["loss"].item() == 0.0
    spread = cfg.terms(flops(0.2, 0.8), progress=0.0)  # p = 1: each block held at θ
    assert spread["network"].item() == 0.0
    assert spread["lower"].item() == pytest.approx(0.3**2 / 2)
    assert spread["upper"].item() == pytest.approx(0.3**2 / 2)
    assert spread["loss"].item() == pytest.approx(2.0 * 0.09)
    free = cfg.terms(flops(0.2, 0.8), progress=0.5)  # p = 0: any spread is allowed
    assert free["loss"].item() == 0.0
    over = cfg.terms(flops(0.9, 0.9), progress=0.5)
    assert over["network"].item() == pytest.approx(0.16)
    with pytest.raises(ValueError, match="budget"):
        SparsityConfig(budget=0.0)


def test_sparsity_loss_gradient_reaches_the_mask_unit() -> None:
    torch.manual_seed(0)
    block = _block("basic", 1).train()
    block(torch.randn(4, 8, 8, 8))
    loss = SparsityConfig(budget=0.25).terms([block.flops()], progress=1.0)["loss"]
    loss.backward()
    # every position starts active: the loss asks for fewer, i.e. lower logits
    assert block.mask_unit.conv.bias.grad.item() > 0


# --- splitting -------------------------------------------------------------------------------


def test_a_sparse_network_splits_with_its_blocks_as_nodes() -> None:
    torch.manual_seed(0)
    model = _randomize(sparsify(build_backbone("scene_resnet10"), "layer2")).eval()
    assert "layer2.0" in split_nodes(model)
    split = split_model(model, "layer2")
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        whole = model(x)
        assert torch.equal(split.back(split.front(x)), whole)
        for _, block in sparse_blocks(model):
            block.execution = "gather"  # the traced front calls the block itself
        assert torch.allclose(split.back(split.front(x)), whole, atol=1e-4)
    assert split.stride == 8 and split.channels == 128


@pytest.mark.cuda
def test_gather_scatter_on_cuda_equals_the_cpu() -> None:
    torch.manual_seed(0)
    model = _randomize(sparsify(resnet18(), "layer2")).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        cpu = model(x)
        model.cuda()
        for _, block in sparse_blocks(model):
            block.execution = "gather"
        gpu = model(x.cuda()).cpu()
    assert torch.allclose(gpu, cpu, atol=1e-3 * cpu.abs().max())


# --- featcodec bench sparse --------------------------------------------------------------------


def test_bench_sparse_rows(tmp_path, capsys) -> None:
    import json

    from featcodec.cli import main

    out = tmp_path / "sparse.json"
    args = ["bench", "sparse", "--sizes", "48", "--budgets", "0.25", "0.75", "--repeat", "1"]
    args += ["--backbone", "scene_resnet10", "--threads", "2", "--devices", "cpu", "cuda"]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["budget"], r["execution"]): r for r in report["rows"] if r["device"] == "cpu"}
    assert set(rows) == {(None, "dense"), (None, "dense-cl")} | {
        (b, e) for b in (0.25, 0.75) for e in ("masked", "gather")
    }
    assert (
        min(rows[(None, "dense")]["time_vs_dense"], rows[(None, "dense-cl")]["time_vs_dense"]) == 1
    )
    for budget in (0.25, 0.75):
        masked, gather = rows[(budget, "masked")], rows[(budget, "gather")]
        assert masked["gmac"] == gather["gmac"]  # the same masks, counted once each way
        # the masks hold about θ of the blocks' pixels; dilation adds some FLOPs
        assert budget <= gather["sparse_fraction"] < budget + 0.3
    assert (
        rows[(0.25, "gather")]["gmac"]
        < rows[(0.75, "gather")]["gmac"]
        < rows[(None, "dense")]["gmac"]
    )
    assert report["threads"] == 2 and "omp_wait_policy" in report
    printed = capsys.readouterr().out
    assert "gather" in printed and "OMP_WAIT_POLICY" in printed
    assert main(["bench", "sparse", "--budgets", "1.5"]) == 1
    assert main(["bench", "sparse", "--split-at", "fc", "--sizes", "32", "--threads", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "featcodec: error: --budgets: each θ must lie in (0, 1]"
    assert err[1].startswith("featcodec: error: the sparse front ends in a ResNet stage")
