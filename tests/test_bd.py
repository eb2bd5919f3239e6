"""BD-rate: known answers, and notes (not crashes) for curves it cannot take as they are."""

from __future__ import annotations

import math

import pytest

from featcodec.eval.bd import Curve, bd_rate, bd_table, format_bd, monotone

RATES = [0.1, 0.2, 0.4, 0.8]
ACC = [0.60, 0.75, 0.85, 0.90]


@pytest.mark.parametrize("method", ["akima", "pchip"])
@pytest.mark.parametrize("factor, expected", [(0.9, -10.0), (0.5, -50.0), (2.0, 100.0)])
def test_known_answers(method: str, factor: float, expected: float) -> None:
    anchor = Curve("anchor", RATES, ACC)
    test = Curve("test", [r * factor for r in RATES], ACC)
    result = bd_rate(anchor, test, method)
    assert result.bd_rate == pytest.approx(expected, abs=1e-6)
    assert result.notes == []
    assert result.overlap == pytest.approx(1.0)


def test_identical_curves_give_zero_and_sign_follows_quality() -> None:
    anchor = Curve("a", RATES, ACC)
    assert bd_rate(anchor, Curve("b", RATES, ACC)).bd_rate == pytest.approx(0.0, abs=1e-9)
    better = Curve("b", RATES, [a + 0.02 for a in ACC])  # same rate, more accuracy
    assert bd_rate(anchor, better).bd_rate < 0


def test_lower_is_better_metric() -> None:
    err = [0.4, 0.25, 0.15, 0.1]
    anchor = Curve("a", RATES, err)
    test = Curve("b", [r * 0.8 for r in RATES], err)
    assert bd_rate(anchor, test, higher_is_better=False).bd_rate == pytest.approx(-20.0)


def test_monotone_keeps_the_pareto_front() -> None:
    rates, metrics, dropped = monotone([0.4, 0.1, 0.2, 0.3, 0.3], [0.85, 0.6, 0.8, 0.79, 0.82])
    assert rates == [0.1, 0.2, 0.3, 0.4]
    assert metrics == [0.6, 0.8, 0.82, 0.85]
    assert dropped == 1


def test_non_monotonic_curve_gets_a_note() -> None:
    anchor = Curve("a", RATES, ACC)
    wobbly = Curve("b", [0.1, 0.2, 0.3, 0.4, 0.8], [0.6, 0.76, 0.74, 0.85, 0.9])
    result = bd_rate(anchor, wobbly)
    assert math.isfinite(result.bd_rate)
    assert any("non-monotonic" in n for n in result.notes)


def test_short_or_missing_overlap_and_single_points() -> None:
    anchor = Curve("a", RATES, ACC)
    short = bd_rate(anchor, Curve("b", [0.5, 0.9], [0.88, 0.95]))
    assert math.isfinite(short.bd_rate) and any("overlap" in n for n in short.notes)
    none = bd_rate(anchor, Curve("b", [0.5, 0.9], [0.95, 0.97]))
    assert math.isnan(none.bd_rate) and "do not overlap" in none.notes[0]
    single = bd_rate(anchor, Curve("b", [0.3], [0.8]))
    assert math.isnan(single.bd_rate) and "need 2" in single.notes[0]
    table = format_bd([short, none, single], "accuracy")
    assert "n/a" in table and "need 2" in table


def test_table_against_a_named_anchor() -> None:
    curves = [Curve("x", RATES, ACC), Curve("y", [r / 2 for r in RATES], ACC)]
    (row,) = bd_table(curves, "x")
    assert (row.test, row.anchor) == ("y", "x") and row.bd_rate == pytest.approx(-50.0)
    with pytest.raises(KeyError, match="no curve named"):
        bd_table(curves, "z")
