"""Bjøntegaard-delta rate between rate–metric curves, with the ``bjontegaard`` package.

BD-rate is the average difference in rate, in percent, between two curves at equal quality,
integrated over the quality range both curves cover (G. Bjøntegaard, VCEG-M33, 2001):
log-rate is interpolated as a function of the metric (Akima or PCHIP), and ::

    BD-rate = 10 ^ ( mean over the overlap of [ log10 R_test(q) − log10 R_anchor(q) ] ) − 1

so −10 % means the test curve needs 10 % fewer bits than the anchor for the same task metric.

Measured task metrics (accuracy on a few hundred images) are noisy and need not rise with
rate, which the interpolation cannot take. :func:`monotone` keeps a curve's Pareto front (a
point is dropped when another point has no more rate and no less metric) and says what it
dropped; every such repair and every short overlap becomes a note beside the number, never an
exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import bjontegaard
import numpy as np

METHODS = ("akima", "pchip")


@dataclass
class Curve:
    """Rate–metric points of one codec: ``rates`` (e.g. bpp) and ``metrics`` (e.g. accuracy)."""

    name: str
    rates: list[float]
    metrics: list[float]


@dataclass
class BDResult:
    """BD-rate of ``test`` against ``anchor`` in percent (NaN when it cannot be computed)."""

    test: str
    anchor: str
    bd_rate: float
    overlap: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "test": self.test,
            "anchor": self.anchor,
            "bd_rate": None if math.isnan(self.bd_rate) else self.bd_rate,
            "overlap": self.overlap,
            "notes": list(self.notes),
        }


def monotone(
    rates: Sequence[float], metrics: Sequence[float], higher_is_better: bool = True
) -> tuple[list[float], list[float], int]:
    """The Pareto front of a curve, sorted by rate: ``(rates, metrics, points dropped)``.

    A point survives when every point of lower rate has a strictly worse metric, so the
    returned metric is strictly monotonic in the rate. Non-finite points are dropped too.
    """
    sign = 1.0 if higher_is_better else -1.0
    points = sorted(
        (float(r), float(m))
        for r, m in zip(rates, metrics, strict=True)
        if math.isfinite(r) and math.isfinite(m)
    )
    kept_r: list[float] = []
    kept_m: list[float] = []
    for r, m in points:
        if kept_m and sign * m <= sign * kept_m[-1]:
            continue  # dominated: more rate, no better metric
        if kept_r and r == kept_r[-1]:  # same rate, better metric: replace the previous point
            kept_r.pop()
            kept_m.pop()
        kept_r.append(r)
        kept_m.append(m)
    return kept_r, kept_m, len(rates) - len(kept_r)


def bd_rate(
    anchor: Curve,
    test: Curve,
    method: str = "akima",
    higher_is_better: bool = True,
    min_overlap: float = 0.5,
) -> BDResult:
    """BD-rate (%) of ``test`` against ``anchor`` at equal metric; negative = fewer bits.

    Rates must be positive. Too few points, no overlap, a short overlap (below
    ``min_overlap`` of the union of both metric ranges) and repaired non-monotonic curves give
    notes in the result; only a missing overlap or fewer than two usable points give NaN.
    """
    if method not in METHODS:
        raise ValueError(f"unknown interpolation {method!r}; use one of {', '.join(METHODS)}")
    notes: list[str] = []
    curves = []
    for curve in (anchor, test):
        positive = [(r, m) for r, m in zip(curve.rates, curve.metrics, strict=True) if r > 0]
        r, m, dropped = monotone(
            [p[0] for p in positive], [p[1] for p in positive], higher_is_better
        )
        if len(positive) < len(curve.rates):
            notes.append(f"{curve.name}: ignored {len(curve.rates) - len(positive)} zero rate(s)")
        if dropped:
            notes.append(f"{curve.name}: dropped {dropped} non-monotonic")
        if len(r) < 2:
            notes.append(f"{curve.name}: {len(r)} usable point(s), need 2")
        curves.append((np.asarray(r), np.asarray(m)))
    (ra, ma), (rt, mt) = curves
    if len(ra) < 2 or len(rt) < 2:
        return BDResult(test.name, anchor.name, math.nan, 0.0, notes)
    lo, hi = max(ma.min(), mt.min()), min(ma.max(), mt.max())
    span = max(ma.max(), mt.max()) - min(ma.min(), mt.min())
    overlap = max(hi - lo, 0.0) / span if span > 0 else 0.0
    if overlap <= 0:
        notes.append("metric ranges do not overlap")
        return BDResult(test.name, anchor.name, math.nan, 0.0, notes)
    if overlap < min_overlap:
        notes.append(f"short overlap ({100 * overlap:.0f} % of the metric range)")
    sign = 1.0 if higher_is_better else -1.0  # the package expects quality rising with rate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overlap is reported above, as a note
        value = bjontegaard.bd_rate(
            ra,
            sign * ma,
            rt,
            sign * mt,
            method=method,
            require_matching_points=False,
            min_overlap=0,
        )
    return BDResult(test.name, anchor.name, float(value), float(overlap), notes)


def bd_table(
    curves: Sequence[Curve],
    anchor: str,
    method: str = "akima",
    higher_is_better: bool = True,
) -> list[BDResult]:
    """BD-rate of every curve against the one named ``anchor``."""
    by_name = {c.name: c for c in curves}
    if anchor not in by_name:
        raise KeyError(f"no curve named {anchor!r}; curves: {', '.join(by_name)}")
    return [
        bd_rate(by_name[anchor], c, method, higher_is_better) for c in curves if c.name != anchor
    ]


def format_bd(results: Sequence[BDResult], metric: str) -> str:
    """A text table of BD-rates (negative: the codec needs fewer bits), notes beside them."""
    if not results:
        return "(no curves to compare)"
    wt = max(len("codec"), *(len(r.test) for r in results))
    wa = max(len("anchor"), *(len(r.anchor) for r in results))
    head = f"{'codec':<{wt}}  {'anchor':<{wa}}  {'BD-rate':>9}  at equal {metric}"
    lines = [head, "-" * len(head)]
    for r in results:
        value = "n/a" if math.isnan(r.bd_rate) else f"{r.bd_rate:+.1f} %"
        note = f"  {'; '.join(r.notes)}" if r.notes else ""
        lines.append(f"{r.test:<{wt}}  {r.anchor:<{wa}}  {value:>9}{note}")
    return "\n".join(lines)
