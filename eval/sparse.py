"""The DynConv experiment on the synthetic scenes: what a sparse edge front (trained to FLOP
budgets θ, :mod:`models.sparse`) costs and keeps, and where its masks look.

For each task checkpoint (dense, or sparse up to the split point), on the synthetic test
split and with the inference masks:

* the task metric of the whole network;
* multiply-accumulates of the front per image (:func:`models.sparse.count_flops`): executed,
  dense, and the executed fraction of the sparse blocks' FLOPs (what θ holds in training);
* where the masks are: the fraction of object pixels (the scene's ``mask`` > 0) and of
  background pixels whose block output is computed, each block's mask resized to the image.

:func:`mask_figure` draws each block's mask over a few scenes.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from featcodec.models.backbones import Normalize
from featcodec.models.sparse import count_flops, sparse_blocks
from featcodec.models.tasks import task_of
from featcodec.training.datasets import SyntheticScenes, collate_scenes
from featcodec.training.task import read_task_network

__all__ = ["evaluate_front", "format_fronts", "mask_figure"]


@torch.no_grad()
def evaluate_front(
    checkpoint: str | os.PathLike[str],
    split_at: str = "layer2",
    image_size: int = 48,
    count: int = 500,
    batch_size: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Metric, front FLOPs and mask placement of one task network on ``count`` test scenes."""
    arch, net = read_task_network(checkpoint)
    task = task_of(arch)
    front = task.split(net, split_at, arch["backbone"]).front.eval()
    normalize = Normalize()
    data = SyntheticScenes("test", count, image_size, seed, cache=False)
    metric = task.metric(arch["num_classes"])
    executed = dense = sparse_num = sparse_den = 0.0
    on_object = on_background = objects = background = 0.0
    blocks = [b for _, b in sparse_blocks(net)]
    for start in range(0, count, batch_size):
        batch = collate_scenes([data[i] for i in range(start, min(count, start + batch_size))])
        x = normalize(batch["image"])
        n = x.shape[0]
        flops = count_flops(front, x)  # runs the front: the blocks keep this batch's masks
        executed += flops["executed"] * n
        dense += flops["dense"] * n
        sparse_num += flops["sparse_executed"] * n
        sparse_den += flops["sparse_dense"] * n
        objects_px = (batch["mask"] > 0).float()[:, None]
        for block in blocks:
            active = F.interpolate(block.mask.float(), size=objects_px.shape[-2:])
            on_object += float((active * objects_px).sum())
            on_background += float((active * (1 - objects_px)).sum())
            objects += float(objects_px.sum())
            background += float((1 - objects_px).sum())
        output = task.loss_pass(net, x, batch)
        metric.update(task.prediction(net, x, output), batch)
    return {
        "checkpoint": str(checkpoint),
        "sparse": arch.get("sparse"),
        "metric": task.metric_name,
        "value": float(metric.compute()),
        "front_gmac": executed / count / 1e9,
        "front_dense_gmac": dense / count / 1e9,
        "front_fraction": executed / dense,
        "sparse_fraction": sparse_num / sparse_den if sparse_den else 1.0,
        "active_on_objects": on_object / objects if objects else None,
        "active_on_background": on_background / background if background else None,
        "scenes": count,
        "image_size": image_size,
    }


def format_fronts(rows: list[dict[str, Any]], labels: list[str]) -> str:
    """The experiment's table, one line per network."""
    metric = rows[0]["metric"] if rows else "metric"
    head = (
        f"{'network':<22}{metric:>10}{'front GMAC':>12}{'× dense':>9}{'blocks':>8}"
        f"{'on objects':>12}{'on backgr.':>12}"
    )
    lines = [head]
    for label, r in zip(labels, rows, strict=True):

        def pct(v: float | None) -> str:
            return f"{100 * v:>11.0f}%" if v is not None else f"{'-':>12}"

        on_obj = r["active_on_objects"] if r["sparse"] else None
        on_bg = r["active_on_background"] if r["sparse"] else None
        lines.append(
            f"{label:<22}{r['value']:>10.4f}{r['front_gmac']:>12.4f}{r['front_fraction']:>9.2f}"
            f"{r['sparse_fraction']:>8.2f}{pct(on_obj)}{pct(on_bg)}"
        )
    lines.append(
        "front GMAC: multiply-accumulates of the front per image, executed (inference masks, "
        "mask units included); × dense: over the dense front's; blocks: executed fraction of "
        "the sparse blocks' FLOPs; on objects / background: share of those pixels computed, "
        "over all sparse blocks"
    )
    return "\n".join(lines)


@torch.no_grad()
def mask_figure(
    checkpoint: str | os.PathLike[str], image_size: int = 96, count: int = 6, seed: int = 0
) -> Figure:
    """Each sparse block's inference mask over ``count`` test scenes: one row per scene, the
    scene, then the scene dimmed where each block skips."""
    arch, net = read_task_network(checkpoint)
    blocks = sparse_blocks(net)
    if not blocks:
        raise ValueError(f"{checkpoint} holds a dense network: no masks to draw")
    data = SyntheticScenes("test", count, image_size, seed, cache=False)
    batch = collate_scenes([data[i] for i in range(count)])
    net(Normalize()(batch["image"]))
    images = batch["image"]
    fig = Figure(figsize=(1.6 * (1 + len(blocks)), 1.6 * count + 0.4))
    axes = fig.subplots(count, 1 + len(blocks), squeeze=False)
    for row in range(count):
        panels = [("scene", images[row])]
        for name, block in blocks:
            mask = F.interpolate(block.mask[row : row + 1].float(), size=images.shape[-2:])[0]
            panels.append((name, images[row] * (0.2 + 0.8 * mask)))
        for col, (title, panel) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(_hwc(panel))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle(f"execution masks, sparse up to {arch.get('sparse')}", fontsize=9)
    return fig


def _hwc(image: Tensor) -> Any:
    return image.clamp(0, 1).permute(1, 2, 0).cpu().numpy()
