"""The summary, the table and the figure of ``featcodec eval equivariance``
(:mod:`eval.equivariance`).

The figure is shaped like the paper's: one panel per transformation, one bar group per layer;
the top row the NRMSE of predicting ``φ(gx)`` (no motion, warp, warp + maps), the bottom row
the task metric of ``back(M_g⁻¹ φ(gx))`` (original network on ``x``, on ``gx``, warp only,
the map before and after training with the task loss).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

NRMSE_BARS = ("none", "warp")
TASK_BARS = ("original", "transformed", "warp", "before_training", "after_training")
TASK_LABELS = {
    "original": "x, no map",
    "transformed": "gx, no map",
    "warp": "gx, warp",
    "before_training": "gx, map (closed form)",
    "after_training": "gx, map (task-trained)",
}


def mean_finite(values: list[float]) -> float:
    """The mean of the finite values (NaN when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def summarize(results: dict[str, dict[str, Any]], kernels: tuple[int, ...]) -> dict[str, Any]:
    """Per layer, the mean NRMSE over the transformations; whether the warp error grows with
    depth (the paper's finding) and whether every learned map beats the warp alone."""
    per_layer = {
        layer: {
            key: mean_finite([r["nrmse"][key] for r in by_t.values()])
            for key in ("none", "warp", *(f"map{k}" for k in kernels))
        }
        for layer, by_t in results.items()
    }
    warp = [v["warp"] for v in per_layer.values()]
    beats = all(
        r["nrmse"][f"map{k}"] < r["nrmse"]["warp"]
        for by_t in results.values()
        for r in by_t.values()
        for k in kernels
        if math.isfinite(r["nrmse"][f"map{k}"])
    )
    return {
        "per_layer": per_layer,
        "warp_error_grows_with_depth": all(a <= b for a, b in zip(warp, warp[1:], strict=False)),
        "maps_beat_warp_everywhere": beats,
        "ratio_map_to_warp": {
            layer: {f"map{k}": v[f"map{k}"] / v["warp"] if v["warp"] else math.nan for k in kernels}
            for layer, v in per_layer.items()
        },
    }


def _f(v: float, digits: int = 4) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """One row per layer and transformation: NRMSE none / warp / maps (and the maps' ratio to
    the warp), then the task metric of the five settings."""
    kernels = report["settings"]["kernels"]
    maps = [f"map{k}" for k in kernels]
    head = ["layer", "g", "stride", "none", "warp", *maps, *(f"{m}/warp" for m in maps)]
    head += [TASK_LABELS[k].replace(" ", "") for k in TASK_BARS]
    rows = [head]
    for layer, by_t in report["results"].items():
        for name, r in by_t.items():
            n, t = r["nrmse"], r["task"]
            ratios = [n[m] / n["warp"] if n["warp"] else math.nan for m in maps]
            rows.append(
                [layer, name, str(r["stride"]), _f(n["none"]), _f(n["warp"])]
                + [_f(n[m]) for m in maps]
                + [_f(x, 3) for x in ratios]
                + [_f(t.get(k, math.nan), 3) for k in TASK_BARS]
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    s = report["summary"]
    lines.append(
        f"task metric: {report['metric']}; warp error grows with depth: "
        f"{s['warp_error_grows_with_depth']}; every map beats the warp: "
        f"{s['maps_beat_warp_everywhere']}"
    )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Write the figure (PNG) of ``report``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    layers = list(results)
    names = list(next(iter(results.values())))
    kernels = report["settings"]["kernels"]
    nrmse_bars = [*NRMSE_BARS, *(f"map{k}" for k in kernels)]
    fig, axes = plt.subplots(
        2, len(names), figsize=(3.2 * len(names) + 1, 6.4), squeeze=False, layout="constrained"
    )
    for col, name in enumerate(names):
        for row, (bars, key, label) in enumerate(
            ((nrmse_bars, "nrmse", "NRMSE of φ(gx)"), (TASK_BARS, "task", report["metric"]))
        ):
            ax = axes[row][col]
            width = 0.8 / len(bars)
            for i, bar in enumerate(bars):
                values = [results[layer][name][key].get(bar, math.nan) for layer in layers]
                xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(layers))]
                text = TASK_LABELS.get(bar, bar) if key == "task" else bar
                ax.bar(xs, values, width, label=text)
            ax.set_xticks(range(len(layers)), layers, rotation=30, fontsize=8)
            ax.tick_params(axis="y", labelsize=8)
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    for row in range(2):
        handles, labels = axes[row][0].get_legend_handles_labels()
        axes[row][-1].legend(
            handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0)
        )
    fig.suptitle(f"Equivariance by layer: {report['network'].split(' from ')[0]}", fontsize=11)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
