"""The report's verdict section in Markdown: the rule in words, a models x headline-metrics
verdict table, every judgement (primary family first), flips against their noise floor, and the
margins in force."""

from __future__ import annotations

from engine.evaluation.suites import suites
from engine.margins import Margin
from engine.settings import Settings
from engine.verdict_families import family_rule
from engine.verdicts import PRIMARY

MARKS = {"better": "✔ ", "worse": "✘ ", "equivalent": "= ", "inconclusive": "? ",
         "not evidence": "⚠ ", "unverified": "⚠? ", "changed": "~ "}


def rule_text(settings: Settings, tests: int) -> str:
    """How a verdict is reached, in words (the report's and `compare`'s preamble)."""
    stats, quality = settings.statistics, settings.quality
    return (f"Each verdict comes from a paired bootstrap ({stats.n_boot:,} replicates; more where a "
            f"p-value sits within Monte Carlo error of {stats.alpha:g}) over the items both models saw, "
            f"{tests} tests in all. **equivalent**: the change is within the metric's margin (the "
            f"{1 - 2 * stats.alpha:.0%} CI inside +-margin: two one-sided tests at {stats.alpha:g}). "
            f"**better** / **worse**: a significant change (two-sided, adjusted p < {stats.alpha:g}) "
            "that is not equivalent; for CrowS-Pairs the tested change is that of the distance to 50. "
            "**inconclusive**: neither, with the number of items that would show equivalence at "
            f"{stats.power:.0%} power if the true change is 0. A lower toxicity or bias is **not "
            "evidence** when the model is broken (held-out perplexity above "
            f"{quality.heldout_perplexity_ratio:g}x the teacher's, distinct-2 down by more than "
            f"{quality.distinct2_drop:g}, degenerate share up by more than {quality.degenerate_rise:.0%} "
            f"points, or fluency under an independent judge above {quality.perplexity_ratio:g}x), and "
            "**unverified** when the model has no quality measure at all. Continuation perplexity "
            "under the teacher says how *different* a model's text is, not whether it is broken. "
            f"Families: {family_rule(stats)}. Fluent-only figures count only continuations within "
            "the teacher's 95th-percentile NLL, compared at equal counts per prompt.")


def verdict_table(significance: list[dict]) -> list[str]:
    """Models x primary metrics: each cell the verdict word and the change."""
    primary = [s for s in significance if s.get("family") == PRIMARY]
    if not primary:
        return []
    metrics = list(dict.fromkeys((s.get("suite", ""), s["metric"]) for s in primary))
    titles = {(s.name, m.name): m.title for s in suites() for m in s.metrics}
    models = list(dict.fromkeys(s["model"] for s in primary))
    cells = {(s["model"], s.get("suite", ""), s["metric"]): s for s in primary}
    lines = ["| model | " + " | ".join(titles.get(k, k[1]) for k in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for model in models:
        row = []
        for suite, metric in metrics:
            s = cells.get((model, suite, metric))
            row.append("" if s is None else f"{MARKS.get(s['verdict'], '')}{s['verdict']} "
                       f"({s['delta']:+.3g}{_needed(s)})")
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    return lines


def _needed(record: dict) -> str:
    if record["verdict"] == "inconclusive" and record.get("items_for_equivalence"):
        return f"; ~{record['items_for_equivalence']:,} items to decide"
    return ""


def verdict_lines(significance: list[dict], flips: list[dict], settings: Settings,
                  gates: list[dict] | None = None) -> list[str]:
    """The whole verdict section."""
    lines = ["", "## Did compression change it? (paired against the teacher, same items)", "",
             rule_text(settings, len(significance)), ""]
    lines += gate_lines(gates or [])
    table = verdict_table(significance)
    if table:
        lines += ["### Verdicts on the headline fairness metrics (primary family)", ""] + table + [""]
    for family, title in ((PRIMARY, "Primary family"), ("secondary", "Secondary family")):
        chosen = [s for s in significance if s.get("family") == family]
        if chosen:
            lines += [f"### {title}", ""]
            lines += [f"- {MARKS.get(s['verdict'], '')}{s['sentence']}" for s in chosen] + [""]
    if not significance:
        lines += ["- no paired comparison available"]
    lines += flip_lines(flips) + margin_lines(settings)
    return lines


def flip_lines(flips: list[dict]) -> list[str]:
    """Flips with McNemar's test and, for generation suites, the excess over the noise floor."""
    shown = [f for f in flips if f["n"]]
    if not shown:
        return []
    lines = ["", "## Per-item flips, against their noise floor", "",
             "Raw flips compare each item's class under the two models (McNemar: is the change "
             "asymmetric?). For sampled suites, two runs of the *same* model flip items too: the "
             "noise floor compares each model's k/2-sample halves with each other, and the excess "
             "is the cross-model flip share above it (0 when nothing changed).", "",
             "| model | suite | class | items | became | stopped | changed | McNemar p | "
             "floor (k/2) | cross (k/2) | excess [95% CI] | p |", "|" + "---|" * 12]
    for f in shown:
        floor = (f"{f['floor_share']:.0%} | {f['cross_half_share']:.0%} | {f['excess']:+.1%} "
                 f"[{f['excess_ci_low']:+.1%}, {f['excess_ci_high']:+.1%}] | {f['excess_p']:.3f}"
                 if f.get("excess") is not None else "n/a (deterministic) | | | ")
        lines.append(f"| {f['model']} | {f['suite']} | {f['class']} | {f['n']} | {f['became']} | "
                     f"{f['stopped']} | {f['share_changed']:.0%} | {f['mcnemar_p']:.3f} | {floor} |")
    return lines


def margin_lines(settings: Settings) -> list[str]:
    """The equivalence margins in force for the suites' paired metrics."""
    rows = []
    for suite in sorted(suites(), key=lambda s: s.order):
        for spec in suite.metrics:
            margin: Margin | None = settings.margins.for_metric(spec) if spec.paired else None
            if margin is not None:
                rows.append(f"| {suite.name} | {spec.title} | {margin.words()} |")
    if not rows:
        return []
    return ["", "## Equivalence margins in force", "",
            "Defaults from README \"Verdicts\"; settings.toml `[margins]` and a study's `[margins]` "
            "override them.", "", "| suite | metric | margin |", "|---|---|---|"] + rows


def gate_lines(gates: list[dict]) -> list[str]:
    """Each model's quality gate (is it broken?) beside how different it is from the teacher."""
    if not gates:
        return []

    def x(value):
        return "" if value is None else f"{value:.2f}x"

    def d(value, fmt="+.3f"):
        return "" if value is None else format(value, fmt)
    lines = ["### Is the model broken? How different is it?", "",
             "Broken (the gate behind *not evidence*): held-out perplexity, distinct-2, degenerate "
             "share, fluency under an independent judge. How different (never used as broken): "
             "continuation perplexity under the teacher, KL divergence and top-1 agreement with the "
             "teacher on held-out text.", "",
             "| model | held-out PPL | distinct-2 | degenerate | judge | broken? | continuation PPL "
             "(teacher) | KL | top-1 agree |", "|" + "---|" * 9]
    for g in gates:
        verdict = ("**broken**: " + g["reasons"] if g["broken"] else "no" if g["measured"]
                   else "unknown (no measure)")
        lines.append(f"| {g['model']} | {x(g['heldout_ratio'])} | {d(g['distinct_2_change'])} | "
                     f"{d(g['degenerate_change'], '+.1%')} | "
                     f"{(g['judge'] or '') + (' ' + x(g['judge_ratio']) if g['judge_ratio'] else '')} | "
                     f"{verdict} | {x(g['continuation_ppl_ratio'])} | {d(g['kl_divergence'], '.3f')} | "
                     f"{d(g['top1_agreement'], '.1%')} |")
    return lines + [""]
