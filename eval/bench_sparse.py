"""``featcodec bench sparse``: the edge front computed densely against the same front with
spatially sparse blocks (DynConv, :mod:`models.sparse`) run by gather–scatter
(:mod:`models.gather_scatter`), measured in the same run.

The front is a backbone cut at its split point (ResNet-18 at ``layer2`` by default, stride 8),
random weights with random batch-norm statistics (timing does not depend on training). Its
blocks' masks come from a smooth random field (objects are blobs, not salt and pepper: a 4×4
grid of Gaussian values upsampled bicubically to each block's output grid), thresholded at the
quantile that leaves a fraction θ of the pixels active; the dilated masks then cover somewhat
more. Rows per input size: the dense front (the peer: torchvision's own blocks) in NCHW and in
channels-last memory (on a CPU the channels-last front is about twice as fast: its stem
max-pool is); then per θ, in channels-last memory, the masked dense front (what training
computes) and gather–scatter. Each is the median of ``repeat`` runs after a warm-up, with
the multiply-accumulates executed (counted by :func:`models.sparse.count_flops`) and the time
relative to the faster dense front.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcodec.eval.bench import median_ms, thread_settings
from featcodec.models.backbones import build_backbone
from featcodec.models.sparse import MaskUnit, count_flops, sparse_blocks, sparsify
from featcodec.models.split import split_model

__all__ = ["bench_sparse", "format_sparse_bench"]


class FieldMask(nn.Module):
    """A mask unit whose decision is set by the benchmark: the block's own unit still runs
    (its time and FLOPs count), but the logits come from a fixed smooth field
    ``(1, 1, g, g)``, resized to the block's output grid and shifted so that a fraction
    ``budget`` of them is positive."""

    def __init__(self, unit: MaskUnit, field: Tensor, budget: float) -> None:
        super().__init__()
        self.unit, self.field, self.budget = unit, field, budget
        self.stride = unit.conv.stride[0]
        self.fc = unit.fc
        self.flops_per_position = unit.flops_per_position

    def forward(self, x: Tensor) -> Tensor:
        self.unit(x)
        size = tuple(-(-s // self.stride) for s in x.shape[-2:])
        logits = F.interpolate(self.field.to(x), size=size, mode="bicubic", align_corners=False)
        cut = torch.quantile(logits.flatten().float(), 1 - self.budget).to(x)
        return (logits - cut).expand(x.shape[0], -1, -1, -1)


def _front(backbone: str, split_at: str, seed: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """``(dense front, sparse front, sparse model)``: the same weights, random BN statistics."""
    stage = _stage(split_at)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_backbone(backbone).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    dense = split_model(model, split_at).front.eval()
    sparse_model = sparsify(build_backbone(backbone), stage).eval()
    sparse_model.load_state_dict(model.state_dict(), strict=False)
    return dense, split_model(sparse_model, split_at).front.eval(), sparse_model


def _stage(split_at: str) -> str:
    stage = split_at.split(".")[0]
    if not stage.startswith("layer"):
        raise ValueError(f"the sparse front ends in a ResNet stage; {split_at!r} is not in one")
    return stage


@torch.no_grad()
def bench_sparse(
    sizes: Sequence[int] = (224, 512),
    budgets: Sequence[float] = (0.25, 0.5, 0.75),
    repeat: int = 5,
    devices: Sequence[str] = ("cpu", "cuda"),
    backbone: str = "resnet18",
    split_at: str = "layer2",
    seed: int = 0,
) -> dict[str, Any]:
    """Time the dense, masked and gather–scatter fronts (one image a call) with the caller's
    torch threads; CUDA rows only when a GPU is present. Returns the JSON-ready report."""
    dense, front, model = _front(backbone, split_at, seed)
    field = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(seed + 1))
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            skipped.append(f"{name}: no CUDA device")
            continue
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        front.to(device, memory_format=torch.channels_last)
        for size in sizes:
            image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
            image = image.to(device)
            x = image.contiguous(memory_format=torch.channels_last)
            flops = count_flops(dense, image)
            times = {}
            for fmt in (torch.contiguous_format, torch.channels_last):
                dense.to(device, memory_format=fmt)
                image = image.contiguous(memory_format=fmt)
                times[fmt] = median_ms(lambda: dense(image), repeat, sync)[0]  # noqa: B023
            dense_ms = min(times.values())
            for fmt, label in (
                (torch.contiguous_format, "dense"),
                (torch.channels_last, "dense-cl"),
            ):
                rows.append(_row(name, size, None, label, times[fmt], dense_ms, flops))
            for budget in budgets:
                for _, block in sparse_blocks(model):
                    unit = getattr(block.mask_unit, "unit", block.mask_unit)
                    block.mask_unit = FieldMask(unit, field, budget)
                for execution in ("masked", "gather"):  # channels-last, as the faster dense
                    for _, block in sparse_blocks(model):
                        block.execution = execution
                    ms = median_ms(lambda: front(x), repeat, sync)[0]  # noqa: B023
                    rows.append(
                        _row(name, size, budget, execution, ms, dense_ms, count_flops(front, x))
                    )
    return {
        "bench": "sparse",
        "backbone": backbone,
        "split_at": split_at,
        **thread_settings(),
        "repeat": repeat,
        "warmup": 1,
        "rows": rows,
        "skipped": skipped,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": platform.processor() or platform.machine(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _row(
    device: str,
    size: int,
    budget: float | None,
    execution: str,
    ms: float,
    dense_ms: float,
    flops: dict[str, float],
) -> dict[str, Any]:
    return {
        "device": device,
        "size": size,
        "budget": budget,
        "execution": execution,
        "ms": ms,
        "time_vs_dense": ms / dense_ms,
        "gmac": flops["executed"] / 1e9,
        "flops_fraction": flops["fraction"],
        "sparse_fraction": flops["sparse_fraction"],
    }


def format_sparse_bench(report: dict[str, Any]) -> str:
    """The report as a table: one line per row, then the skipped devices."""
    lines = [
        f"{report['backbone']} front up to {report['split_at']}, one image a call, "
        f"{report['threads']} CPU thread(s), OMP_WAIT_POLICY={report['omp_wait_policy']}, "
        f"median of {report['repeat']} after {report['warmup']} warm-up run",
        "",
        f"{'device':<7}{'px':>5}{'θ':>6}  {'execution':<10}{'ms':>9}{'× dense':>9}{'GMAC':>8}"
        f"{'MAC frac':>10}{'blocks':>8}",
    ]
    for r in report["rows"]:
        theta = "-" if r["budget"] is None else f"{r['budget']:.2f}"
        lines.append(
            f"{r['device']:<7}{r['size']:>5}{theta:>6}  {r['execution']:<10}{r['ms']:>9.2f}"
            f"{r['time_vs_dense']:>9.2f}{r['gmac']:>8.3f}{r['flops_fraction']:>10.2f}"
            f"{r['sparse_fraction']:>8.2f}"
        )
    lines += [f"({s})" for s in report["skipped"]]
    lines.append(
        "dense: NCHW; dense-cl, masked, gather: channels-last memory; × dense: time over the "
        "faster dense front; MAC frac: multiply-accumulates executed / the dense front's (mask "
        "units included); blocks: ΣF_sp/ΣF of the sparse blocks (dilation included)"
    )
    return "\n".join(lines)
