"""Rate–distortion figures with matplotlib: one curve per codec, markers at measured points.

The same figure goes to a file (``featcodec plot rd``, PNG/PDF/SVG), to TensorBoard (the
demo's λ sweep, ``featcodec eval rd --tensorboard``) and, point by point, to the validation
logs of a training run.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend
from matplotlib.ticker import FuncFormatter

from featcodec.codec.errors import InputError
from featcodec.codec.files import atomic_write
from featcodec.eval.bd import BDResult, Curve

FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
RATE_LABELS = {
    "bpp": "rate (bits per input pixel, from stream bytes)",
    "bits_per_element": "rate (bits per feature-tensor element, from stream bytes)",
}
_MARKERS = "os^Dvp*hX<>"


def metric_label(metric: str) -> str:
    units = {
        "accuracy": "top-1 accuracy",
        "psnr": "PSNR (dB)",
        "miou": "mIoU",
        "depth_rmse": "depth RMSE (lower is better)",
        "pck": "PCK@0.1",
        "map": "mAP@[.5:.95]",
    }
    return units.get(metric, metric)


def plot_rd(
    curves: Sequence[Curve],
    metric: str,
    rate: str = "bpp",
    title: str | None = None,
    reference: float | None = None,
    bd: Sequence[BDResult] | None = None,
    log_rate: bool = True,
) -> Figure:
    """An RD figure: rate on x (log scale by default), ``metric`` on y.

    Args:
        curves: the codecs to draw.
        reference: the metric without compression, drawn as a dashed line.
        bd: BD-rates against an anchor, drawn as a table under the axes.
    """
    fig = Figure(figsize=(8.0, 4.8 + (0.3 * (len(bd) + 1) if bd else 0.0)))
    ax = fig.subplots()
    for i, c in enumerate(curves):
        ax.plot(c.rates, c.metrics, marker=_MARKERS[i % len(_MARKERS)], ms=5, lw=1.4, label=c.name)
    if reference is not None and math.isfinite(reference):
        ax.axhline(reference, color="0.4", ls="--", lw=1, label="uncompressed")
    if log_rate and all(r > 0 for c in curves for r in c.rates):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(RATE_LABELS.get(rate, rate))
    ax.set_ylabel(metric_label(metric))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    if bd:
        cells = [
            [
                r.test,
                r.anchor,
                "n/a" if math.isnan(r.bd_rate) else f"{r.bd_rate:+.1f} %",
                "; ".join(r.notes) or "",
            ]
            for r in bd
        ]
        table = ax.table(
            cellText=cells,
            colLabels=["codec", "anchor", "BD-rate", f"notes (BD-rate at equal {metric})"],
            loc="bottom",
            bbox=[0.0, -0.28 - 0.07 * len(bd), 1.0, 0.07 * (len(bd) + 1)],
            cellLoc="left",
            colWidths=[0.2, 0.13, 0.1, 0.57],
        )
        table.auto_set_font_size(False)
        table.set_fontsize(7)
    fig.tight_layout()
    return fig


def _minor_label(v: float, _: object) -> str:
    """Label the minor ticks 2, 3 and 5 of each decade of a log axis, not the crowded rest."""
    if v <= 0:
        return ""
    mantissa = round(v / 10 ** math.floor(math.log10(v)), 6)
    return f"{v:g}" if mantissa in (2, 3, 5) else ""


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` atomically; the format follows the suffix (.png, .pdf or .svg)."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported figure format (use {', '.join(FORMATS)})")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
    atomic_write(p, buf.getvalue())
    return p
