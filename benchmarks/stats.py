"""Order statistics: every figure reported is a median or a 99th percentile with its sample count."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (the value below which a fraction ``q`` of the samples fall)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[rank - 1])


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """``{"n", "median", "p99", "min", "max"}`` of ``values * scale``."""
    if not values:
        return {"n": 0, "median": None, "p99": None, "min": None, "max": None}
    return {
        "n": len(values),
        "median": round(median(values) * scale, digits),
        "p99": round(quantile(values, 0.99) * scale, digits),
        "min": round(min(values) * scale, digits),
        "max": round(max(values) * scale, digits),
    }


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, digits)


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """``items`` rotated by the round number, so no contender always runs first or last."""
    if not items:
        return []
    shift = round_index % len(items)
    return list(items[shift:]) + list(items[:shift])
