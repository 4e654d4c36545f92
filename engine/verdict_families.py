"""Multiple comparisons for verdicts: which tests share a family, how each family's p-values are
adjusted, and the Monte Carlo refinement of p-values that sit on alpha.

The rule (recorded in every report): each model's overall headline fairness metrics form that
model's **primary** family, adjusted with `statistics.adjust` (Holm: the family-wise error rate
of the question the study asks); every other line (subsets, fluent-only figures, worst-group
changes, quality metrics) is **secondary**, adjusted together with `statistics.adjust_secondary`
(Benjamini-Hochberg: the false discovery rate). The difference p-values and the equivalence
(TOST) p-values are adjusted the same way, each over its family."""

from __future__ import annotations

from collections import defaultdict

from engine.evaluation.paired import ADJUSTERS
from engine.settings import StatSettings
from engine.verdicts import PRIMARY, Judgement

REFINE_ROUNDS = 2          # each multiplies the replicates of a p-value near alpha by REFINE_FACTOR
REFINE_FACTOR = 4
REFINE_CAP = 200_000       # ... up to this many (never fewer than the settings ask for)


def family_key(j: Judgement) -> tuple:
    return (PRIMARY, j.label) if j.family == PRIMARY else (j.family,)


def families(judgements: list[Judgement]) -> dict[tuple, list[Judgement]]:
    """The judgements grouped by family (assigning `default_family` where none is set)."""
    grouped: dict[tuple, list[Judgement]] = defaultdict(list)
    for j in judgements:
        j.family = j.family or j.default_family()
        grouped[family_key(j)].append(j)
    return grouped


def _adjust(members: list[Judgement], stats: StatSettings) -> None:
    method = stats.adjust if members[0].family == PRIMARY else stats.adjust_secondary
    diff_p = ADJUSTERS[method]([j.tested.p_value for j in members])
    equiv_p = ADJUSTERS[method]([j.equivalence_p for j in members])
    for j, p, q in zip(members, diff_p, equiv_p):
        j.p_adjusted, j.equivalence_p_adjusted, j.family_size = p, q, len(members)


def decide_all(judgements: list[Judgement], stats: StatSettings) -> None:
    """Adjust every family's p-values and decide every verdict. A judgement whose adjusted
    p-value lies within Monte Carlo error of alpha is recomputed with REFINE_FACTOR x more
    replicates (up to REFINE_ROUNDS times, at most REFINE_CAP replicates); one still there is
    marked undecided."""
    grouped = families(judgements)
    for j in judgements:
        j.n_boot = j.n_boot or stats.n_boot
    for round_ in range(REFINE_ROUNDS + 1):
        for members in grouped.values():
            _adjust(members, stats)
        near = [j for j in judgements if j.near_alpha(stats)]
        if not near:
            break
        more = [j for j in near if j.recompute and j.n_boot < REFINE_CAP]
        if round_ == REFINE_ROUNDS or not more:
            for j in near:
                j.undecided = True
            break
        for j in near:
            if j not in more:
                j.undecided = True
        for j in more:
            j.n_boot = min(j.n_boot * REFINE_FACTOR, REFINE_CAP)
            j.diff = j.recompute(j.n_boot, stats.seed + round_ + 1)
    for j in judgements:
        j.decide(stats)


def family_rule(stats: StatSettings) -> str:
    """The family rule in words, for the report and `compare`."""
    names = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no adjustment"}
    return (f"primary family = each model's overall headline fairness metrics, adjusted per model "
            f"({names[stats.adjust]}); secondary family = every other line (subsets, fluent-only, "
            f"worst group, quality), adjusted together ({names[stats.adjust_secondary]}); "
            "difference and equivalence p-values each adjusted over their family")

