"""Test helpers over the suite registry."""

from __future__ import annotations

from engine.evaluation.suites import get_suite


def per_item_values(suite: str, metric: str, rows: list[dict], subset: str = "") -> dict[int, float]:
    """{item_index: the item's contribution to `metric`} (e.g. each prompt's max toxicity for
    expected_max_toxicity), for paired comparisons between runs on the same items."""
    return get_suite(suite).per_item(metric, rows, subset)
