"""Where the app's text plots put things, free of Textual and plotext: axis limits with a floor at
zero for quantities that cannot be negative (a perplexity, a probability), one x per model (two
runs of one model are drawn at one x; only different models that share an x are moved apart),
and one label for points that land on one spot (`1,3`: the teacher's number is not hidden under
another model's)."""

from __future__ import annotations

from typing import Hashable, Sequence


def limits(values: Sequence[float], pad_share: float, min_pad: float) -> tuple[float, float]:
    """(low, high) around `values` with `pad_share` of their range on each side (at least
    `min_pad`); never below zero when no value is negative."""
    low, high = min(values), max(values)
    pad = (high - low) * pad_share or min_pad
    floor = low - pad
    if low >= 0 and floor < 0:
        floor = 0.0
    return floor, high + pad


def spread_models(xs: Sequence[float], models: Sequence[Hashable]) -> list[float]:
    """Each model at one x: runs of one model keep their model's x; different models at the
    same x are moved apart by 2% of the axis each, so no model hides another."""
    width = (max(xs) - min(xs)) or max(abs(xs[0]), 1.0)
    placed: dict[Hashable, float] = {}
    seen: dict[float, int] = {}
    out = []
    for x, model in zip(xs, models):
        if model not in placed:
            n = seen.get(x, 0)
            seen[x] = n + 1
            placed[model] = x + n * 0.02 * width
        out.append(placed[model])
    return out


def shared_labels(points: Sequence[tuple[float, float]], numbers: Sequence[int],
                  tolerance: tuple[float, float]) -> dict[int, str]:
    """{index of the point that carries the label: the label}: points within `tolerance` (x, y)
    of an earlier one share its label (`1,3`), written at that first point only."""
    owners: list[int] = []
    labels: dict[int, list[str]] = {}
    for i, (x, y) in enumerate(points):
        owner = next((o for o in owners if abs(points[o][0] - x) <= tolerance[0]
                      and abs(points[o][1] - y) <= tolerance[1]), None)
        if owner is None:
            owners.append(i)
            labels[i] = [str(numbers[i])]
        else:
            labels[owner].append(str(numbers[i]))
    return {i: ",".join(parts) for i, parts in labels.items()}


def baseline_last(order: Sequence[bool]) -> list[int]:
    """The drawing order of points whose baseline flags are `order`: the baseline (teacher)
    last, so that its marker is drawn over any point at the same spot."""
    return [i for i, b in enumerate(order) if not b] + [i for i, b in enumerate(order) if b]
