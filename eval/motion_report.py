"""Reporting ``featcodec eval motion`` (:mod:`eval.motion`): the summary table, the figure
(four sweeps + the histogram of the random draws) and the strict-JSON results file."""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend

from featcodec.eval.motion import RANGES, nrmse_stats, ratio


def format_motion(report: dict[str, Any]) -> str:
    """The summary as a text table: the random draws, then the mean over each sweep."""
    st, sm = report["settings"], report["summary"]
    c, h, w = st["tensor_shape"]
    lines = [
        f"latent motion: {st['backbone']} {st['layer']} (stride {st['stride']}, {c}×{h}×{w}), "
        f"weights {st['weights_used']}, {st['image_source']}, margin {st['margin']}",
        "",
        f"{'NRMSE':<22}{'prediction':>12}{'no motion':>11}{'pred/base':>11}{'valid':>7}",
    ]
    n = sm["count"]
    for stat in ("mean", "median"):
        p, b = sm["prediction"][stat], sm["baseline"][stat]
        label = f"{n} draws, {stat}"
        lines.append(
            f"{label:<22}{p:>12.4f}{b:>11.4f}{ratio(p, b):>11.3f}{sm['valid_fraction_mean']:>7.0%}"
        )
    for family, sweep in report["sweeps"].items():
        for curve, r in sweep["curves"].items():
            p, b = nrmse_stats(r["prediction"]), nrmse_stats(r["baseline"])
            valid = statistics.fmean(r["valid_fraction"])
            label = f"{family} {curve} (mean)"
            lines.append(
                f"{label:<22}{p['mean']:>12.4f}{b['mean']:>11.4f}"
                f"{ratio(p['mean'], b['mean']):>11.3f}{valid:>7.0%}"
            )
    if "refined" in sm:
        k = st["refine"]
        lines.append(
            f"{'warp + ' + str(k) + '×' + str(k) + ' map':<22}{sm['refined']['mean']:>12.4f}"
            f"   (mean; {sm['refined_to_warp']:.3f} of the warp's, bank fitted on "
            f"{st['fit_draws']} other draws)"
        )
    verdict = "meets" if sm["meets_target"] else "misses"
    lines += [
        "",
        f"prediction / no motion (mean over draws): {sm['ratio_mean']:.3f} — {verdict} the "
        f"target ≤ {sm['target_ratio']:.2f}; the paper reports NRMSE ≈ 0.04",
    ]
    if sm["undefined"]:
        lines.append(f"({sm['undefined']} draws left no valid position and are not counted)")
    return "\n".join(lines)


def plot_motion(report: dict[str, Any]) -> Figure:
    """Four sweep panels (prediction solid, no-motion baseline dashed) and the histogram of
    NRMSE over the random draws."""
    st = report["settings"]
    fig = Figure(figsize=(14.0, 8.0))
    grid = fig.add_gridspec(2, 3)
    slots = [grid[0, 0], grid[0, 1], grid[0, 2], grid[1, 0]]
    for slot, (family, sweep) in zip(slots, report["sweeps"].items(), strict=True):
        ax = fig.add_subplot(slot)
        for i, (curve, r) in enumerate(sweep["curves"].items()):
            colour = f"C{i}"
            ax.plot(
                r["values"], r["prediction"], color=colour, marker=".", label=f"{curve}: motion"
            )
            ax.plot(r["values"], r["baseline"], color=colour, ls="--", lw=1, label=f"{curve}: none")
        if family == "translation":
            s, lo, hi = st["stride"], *RANGES["tx"]
            for k in range(math.ceil(lo / s), math.floor(hi / s) + 1):
                ax.axvline(k * s, color="0.8", lw=0.8, zorder=0)
        ax.set_title(family)
        ax.set_xlabel(sweep["unit"])
        ax.set_ylabel("NRMSE")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, 1:])
    sm = report["summary"]
    pred = [v for v in report["draws"]["prediction"] if math.isfinite(v)]
    base = [v for v in report["draws"]["baseline"] if math.isfinite(v)]
    ax.hist(
        [pred, base],
        bins=40,
        label=[
            f"motion prediction (median {sm['prediction']['median']:.4f})",
            f"no motion (median {sm['baseline']['median']:.4f})",
        ],
    )
    ax.set_title(f"{len(pred)} random affine transforms")
    ax.set_xlabel("NRMSE")
    ax.set_ylabel("transforms")
    ax.legend(fontsize=8)
    fig.suptitle(
        f"{st['backbone']} {st['layer']} (stride {st['stride']}), weights {st['weights_used']}, "
        f"{st['image_source']}"
    )
    fig.tight_layout()
    return fig


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (written atomically by the caller, with the JSON)."""

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """``(motion.json, motion.png)`` in the folder ``out``."""
    folder = Path(out)
    return folder / "motion.json", folder / "motion.png"


def report_json(report: dict[str, Any]) -> str:
    """The report as strict JSON text: NaN (an NRMSE with no valid position) becomes null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(report), indent=2, allow_nan=False)
