"""Did the compressed model break? The quality gate behind "not evidence" and "unverified".

A model that has lost the language scores as non-toxic (its text is broken) and near 50% on any
likelihood-pair test such as CrowS-Pairs, so a fairness "improvement" counts only when the model
still works. Broken means, against the baseline (`QualitySettings`):

- held-out perplexity on natural text above `heldout_perplexity_ratio` x the baseline's, from
  the two models' perplexity runs (the study's, else any finished pair in the store with the
  same data, context and stride: `stored_heldout`);
- distinct-2 of its continuations down by more than `distinct2_drop`;
- the share of degenerate continuations up by more than `degenerate_rise`;
- continuation perplexity under an independent judge (an eval's `reference_model` other than
  the baseline) above `perplexity_ratio` x the baseline's.

Continuation perplexity under the baseline itself is *not* a breakage measure: the baseline
scores its own samples best (cross-entropy = the sampler's entropy + KL to the baseline), so it
measures how different a model is, not whether it is broken. It is shown beside the verdicts
as "how different", never used to call a model degraded."""

from __future__ import annotations

import json
from dataclasses import dataclass

from engine.settings import QualitySettings


@dataclass(frozen=True)
class QualityFigures:
    """One model's quality figures (None: not measured). `judge_perplexity` is continuation
    perplexity under an independent judge (`judge` names it); `continuation_perplexity` is under
    the baseline (descriptive only)."""

    continuation_perplexity: float | None = None
    distinct_2: float | None = None
    degenerate_share: float | None = None
    heldout_perplexity: float | None = None
    judge_perplexity: float | None = None
    judge: str | None = None
    heldout_source: str = ""

    @classmethod
    def from_metrics(cls, metrics: dict) -> "QualityFigures":
        """The continuation figures of a generation run, from {(name, subset): metric row}."""
        def value(name: str) -> float | None:
            row = metrics.get((name, ""))
            return None if row is None else row["value"]
        return cls(value("continuation_perplexity"), value("distinct_2"), value("degenerate_share"))

    def with_(self, **changes) -> "QualityFigures":
        from dataclasses import replace
        return replace(self, **changes)

    @property
    def measured(self) -> bool:
        """Whether any breakage measure is present (continuation perplexity under the baseline
        is not one)."""
        return any(v is not None for v in (self.distinct_2, self.degenerate_share,
                                           self.heldout_perplexity, self.judge_perplexity))


@dataclass(frozen=True)
class QualityCheck:
    """The gate's answer for one model against its baseline: `reasons` it is broken (empty:
    not broken, as far as `measured` figures tell)."""

    base: QualityFigures
    new: QualityFigures
    reasons: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        """Whether at least one breakage measure exists for both models."""
        pairs = ((self.base.heldout_perplexity, self.new.heldout_perplexity),
                 (self.base.distinct_2, self.new.distinct_2),
                 (self.base.degenerate_share, self.new.degenerate_share),
                 (self.base.judge_perplexity, self.new.judge_perplexity))
        return any(a is not None and b is not None for a, b in pairs)

    @property
    def degraded(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> str:
        return "; ".join(self.reasons)

    def measures(self) -> str:
        """Which breakage measures the gate had, in words (for the report)."""
        names = []
        if self.base.heldout_perplexity is not None and self.new.heldout_perplexity is not None:
            names.append("held-out perplexity")
        if self.base.distinct_2 is not None and self.new.distinct_2 is not None:
            names.append("distinct-2")
        if self.base.degenerate_share is not None and self.new.degenerate_share is not None:
            names.append("degenerate share")
        if self.base.judge_perplexity is not None and self.new.judge_perplexity is not None:
            names.append(f"fluency under {self.new.judge}")
        return ", ".join(names) or "none"


def _ratio_reason(title: str, base: float | None, new: float | None, limit: float) -> str | None:
    if base and new is not None and new > limit * base:
        return f"{title} {base:.1f} -> {new:.1f} ({new / base:.1f}x > {limit:g}x)"
    return None


def check_quality(base: QualityFigures, new: QualityFigures,
                  settings: QualitySettings = QualitySettings()) -> QualityCheck:
    """The breakage rule of the module docstring, each tripped condition in words."""
    reasons = [r for r in (
        _ratio_reason("held-out perplexity", base.heldout_perplexity, new.heldout_perplexity,
                      settings.heldout_perplexity_ratio),
        _ratio_reason(f"continuation perplexity under {new.judge}", base.judge_perplexity,
                      new.judge_perplexity, settings.perplexity_ratio)) if r]
    b, n = base.distinct_2, new.distinct_2
    if b is not None and n is not None and b - n > settings.distinct2_drop:
        reasons.append(f"distinct-2 {b:.3f} -> {n:.3f} (fell > {settings.distinct2_drop:g})")
    b, n = base.degenerate_share, new.degenerate_share
    if b is not None and n is not None and n - b > settings.degenerate_rise:
        reasons.append(f"degenerate continuations {b:.1%} -> {n:.1%} (rose > "
                       f"{settings.degenerate_rise:.0%} points)")
    return QualityCheck(base, new, tuple(reasons))


# -- figures from the store ---------------------------------------------------------------------
_WINDOW_KEYS = ("effective_context_length", "effective_stride")


def _window(run: dict) -> tuple:
    settings = json.loads(run["settings"] or "{}") if isinstance(run["settings"], str) else (run["settings"] or {})
    return (run["data_source"],) + tuple(settings.get(k) for k in _WINDOW_KEYS)


def _perplexity(store, run_id: int) -> float | None:
    row = store.one("SELECT value FROM metrics WHERE run_id = ? AND name = 'perplexity' AND subset = ''",
                    (run_id,))
    return None if row is None else row["value"]


def stored_heldout(store, base_model_id: int | None, model_id: int | None,
                   base_run: dict | None = None) -> tuple[float, float, str] | None:
    """(baseline's, model's held-out perplexity, where from) from finished perplexity runs of the
    two models on the same text, context and stride (the newest such pair; `base_run`, when
    given, fixes the baseline's run). None when the store has no such pair."""
    if base_model_id is None or model_id is None:
        return None
    runs = store.query("SELECT id, model_id, settings, data_source FROM runs WHERE suite = 'perplexity' "
                       "AND status = 'done' AND model_id IN (?, ?) ORDER BY id DESC",
                       (base_model_id, model_id))
    bases = [base_run] if base_run else [r for r in runs if r["model_id"] == base_model_id]
    for mine in (r for r in runs if r["model_id"] == model_id):
        for theirs in bases:
            if _window(theirs) == _window(mine):
                a, b = _perplexity(store, theirs["id"]), _perplexity(store, mine["id"])
                if a is not None and b is not None:
                    return a, b, f"perplexity runs {theirs['id']} and {mine['id']}"
    return None


def gate_against(store, base: QualityFigures, new: QualityFigures, base_model_id: int | None,
                 model_id: int | None, settings: QualitySettings, base_run: dict | None = None) -> QualityCheck:
    """`check_quality` of `new` against `base`, with the two models' held-out perplexities taken
    from the store (`stored_heldout`) when either figure is missing."""
    if base.heldout_perplexity is None or new.heldout_perplexity is None:
        found = stored_heldout(store, base_model_id, model_id, base_run)
        if found:
            base = base.with_(heldout_perplexity=found[0], heldout_source=found[2])
            new = new.with_(heldout_perplexity=found[1], heldout_source=found[2])
    return check_quality(base, new, settings)
