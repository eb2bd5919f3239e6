"""Equivalence of two networks' representations, measured by stitching (Lenc & Vedaldi, CVPR
2015, "Franken-network"), and old streams served to a new back end.

``featcodec experiment stitching`` (:func:`run_stitching`): for networks A and B (task
checkpoints) and each split point, B's metric on A's tensor through a 1×1 stitching layer
``E`` (:class:`~training.stitch_module.StitchModule`)::

    x ─A.front─▶ φ_A ─E─▶ B.back ─▶ B's metric on the test split
      (i)   E before training: the identity where the channels match, else the regression
      (ii)  E = the closed-form regression φ_B ≈ E·φ_A + b (LinearFit over training images)
      (iii) E after training on B's task loss (from (ii))
      (iv)  B's own metric (x ─B.front─▶ φ_B ─B.back─▶), beside A's own

The paper finds early layers interchangeable after training ``E`` and deep ones less so.

:func:`compare_streams` is the measurement of serving old streams (``scripts/
stitch-experiment.sh``): the predictions ``featcodec decode`` wrote for the same test images
through different codecs (A's streams through ``E`` into B, B's own codec), each scored
against the labels, with the rate from the streams' real bytes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from featcodec.codec.errors import InputError
from featcodec.codec.files import atomic_write
from featcodec.eval.data import EvalData, synthetic_eval_set
from featcodec.models.tasks import task_of
from featcodec.training.datasets import SyntheticScenesDataModule
from featcodec.training.stitch_module import StitchModule, read_task_network, split_network

log = logging.getLogger(__name__)
"""Progress lines (the CLI shows them; a library user configures logging)."""

SPLITS = ("maxpool", "layer1", "layer2", "layer3", "layer4")
"""The default split points: after the stem's max-pooling and after each stage of a ResNet."""


@dataclass
class StitchingConfig:
    """What ``featcodec experiment stitching`` trains and measures; the defaults take a couple
    of minutes on 2 CPU cores (48 px synthetic scenes)."""

    network_a: str = "runs/demo-final/tasknet.ckpt"
    network_b: str = "runs/tasknet-b/tasknet.ckpt"
    out: str = "runs/stitching"
    splits: tuple[str, ...] = SPLITS
    image_size: int = 48
    train_size: int = 1920
    test_size: int = 300
    batch_size: int = 32
    steps: int = 60
    fit_batches: int = 20
    lr: float = 3e-3
    ridge: float = 1e-3
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.splits:
            raise ValueError("give at least one split point")
        if min(self.train_size, self.test_size, self.batch_size, self.steps, self.fit_batches) < 1:
            raise ValueError("sizes, steps and fit_batches must be at least 1")


@torch.no_grad()
def stitched_metric(module: StitchModule, data: EvalData, own: bool = False) -> float:
    """B's metric on ``data`` through A's front and ``E`` (``own``: through B's own front)."""
    module.eval()
    metric = module.task.metric(module.num_classes)
    for batch in data.batches(64):
        metric.update(module.prediction(batch, own=own), batch)
    return float(metric.compute())


@torch.no_grad()
def own_metric(path: str, data: EvalData) -> float:
    """The metric of the task network of checkpoint ``path`` on ``data``."""
    from featcodec.models.backbones import Normalize

    arch, net = read_task_network(path)
    task, normalize = task_of(arch), Normalize()
    metric = task.metric(arch["num_classes"])
    for batch in data.batches(64):
        x = normalize(batch["image"])
        metric.update(task.prediction(net, x, task.loss_pass(net, x, batch)), batch)
    return float(metric.compute())


def check_splits(cfg: StitchingConfig) -> None:
    """Every split point must exist (and be a cut) in both networks: one line otherwise,
    before anything is trained."""
    for path in (cfg.network_a, cfg.network_b):
        arch, net = read_task_network(path)
        for split in cfg.splits:
            split_network(task_of(arch), net, split, arch["backbone"])


def _trainer(steps: int, progress: bool) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


def run_stitching(cfg: StitchingConfig) -> dict[str, Any]:
    """Stitch A into B at every split point of ``cfg``; returns what is written to
    ``<out>/stitching.json`` (each split's ``E`` is kept as ``<out>/stitch-<split>.ckpt``)."""
    start = time.perf_counter()
    check_splits(cfg)
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, verbose=False)
    data = SyntheticScenesDataModule(
        image_size=cfg.image_size,
        train_size=cfg.train_size,
        val_size=1,
        test_size=1,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    data.setup("fit")
    test = synthetic_eval_set("test", cfg.test_size, cfg.image_size, cfg.seed)
    a_own, b_own = own_metric(cfg.network_a, test), own_metric(cfg.network_b, test)
    rows: list[dict[str, Any]] = []
    for i, split in enumerate(cfg.splits):
        t0 = time.perf_counter()
        module = StitchModule(
            cfg.network_b,
            network_a=cfg.network_a,
            split_at=split,
            fit_batches=cfg.fit_batches,
            lr=cfg.lr,
            ridge=cfg.ridge,
        )
        cin, cout = module.stitch.in_channels, module.stitch.out_channels
        before_init = "identity" if cin == cout else "regression"
        before = stitched_metric(module, test) if cin == cout else None
        module.fit_regression(islice(iter(data.train_dataloader()), cfg.fit_batches))
        regression = stitched_metric(module, test)
        _trainer(cfg.steps, cfg.progress).fit(module, train_dataloaders=data.train_dataloader())
        trained = stitched_metric(module, test)
        module.save(root / f"stitch-{split}.ckpt")
        row = {
            "split_at": split,
            "channels": [cin, cout],
            "before": regression if before is None else before,
            "before_init": before_init,
            "regression": regression,
            "trained": trained,
            "b_own": b_own,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        log.info(
            f"[{i + 1}/{len(cfg.splits)}] {split}: before {row['before']:.3f} ({before_init}), "
            f"regression {regression:.3f}, trained {trained:.3f}, B's own {b_own:.3f}"
        )
    results = {
        "config": asdict(cfg),
        "metric": module.task.metric_name,
        "a_own": a_own,
        "b_own": b_own,
        "splits": rows,
        "total_s": time.perf_counter() - start,
    }
    atomic_write(root / "stitching.json", json.dumps(results, indent=2))
    return results


def format_table(results: dict[str, Any]) -> str:
    """The per-split results as a text table."""
    m = results["metric"]
    head = (
        f"{'split':<9}{'channels':>11}{'before E':>10}{'(init)':>13}{'regression':>12}"
        f"{'trained':>9}{f'B own {m}':>16}"
    )
    lines = [head, "-" * len(head)]
    for r in results["splits"]:
        ch = f"{r['channels'][0]}→{r['channels'][1]}"
        lines.append(
            f"{r['split_at']:<9}{ch:>11}{r['before']:>10.3f}{r['before_init']:>13}"
            f"{r['regression']:>12.3f}{r['trained']:>9.3f}{r['b_own']:>16.3f}"
        )
    lines.append(f"A's own {m}: {results['a_own']:.3f}; B's own {m}: {results['b_own']:.3f}")
    return "\n".join(lines)


# serving old streams ------------------------------------------------------------------------------


def compare_streams(
    runs: dict[str, tuple[str, str]], size: int, image_size: int = 48, seed: int = 0
) -> dict[str, Any]:
    """Score the scene classifier's decoded predictions (each one's ``class``) of the
    synthetic test split against its labels.

    Args:
        runs: name → (folder of the ``.fcb`` streams, the ``predictions.json`` that
            ``featcodec decode`` wrote for them); streams are named by the test image's index
            (``00042.fcb``, as ``featcodec eval rd --streams`` writes them).
        size, image_size, seed: the synthetic test split they were coded from.

    Returns:
        Per run: images, accuracy, bytes per image and bits per input pixel from the streams'
        real sizes.
    """
    data = synthetic_eval_set("test", size, image_size, seed)
    labels = torch.cat([b["label"].reshape(-1) for b in data.batches(256)]).tolist()
    out: dict[str, Any] = {"dataset": data.info, "runs": {}}
    for name, (streams, predictions) in runs.items():
        folder = Path(streams)
        files = sorted(folder.glob("*.fcb"))
        if len(files) != size:
            raise InputError(f"{folder}: {len(files)} streams, the test split has {size}")
        found = json.loads(Path(predictions).read_text())
        missing = [f.stem for f in files if f.stem not in found]
        if missing:
            raise InputError(f"{predictions}: no prediction for {missing[0]}")
        correct = sum(int(found[f.stem]["class"] == labels[int(f.stem)]) for f in files)
        total = sum(f.stat().st_size for f in files)
        out["runs"][name] = {
            "images": size,
            "accuracy": correct / size,
            "bytes_per_image": total / size,
            "bpp": 8 * total / (size * image_size * image_size),
        }
    return out
