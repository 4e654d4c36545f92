"""What the new-job form warns about before queueing, free of Textual (read on the app's
reader thread): an eval whose comparable settings differ from those of the finished runs of
its suite (it could not be compared with them), an n too small for an interval to mean much,
and a spec that already ran (`engine.already_ran`). And which eval fields a suite uses, so the
form shows only those (from the suite registry: its comparable settings, and the scorer's
fields for suites that generate text)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Mapping

from engine.api import (Duplicate, SubmitEstimate, canonical_spec, estimate_specs,
                        finished_duplicates, UserError, Suite, get_suite, suites, EvalSpec,
                        JobSpec, SpecError, Store, loads, method_fields, method_specific_fields)

TINY_N = 30            # fewer items than this: intervals too wide, paired tests of little power
RECENT_RUNS = 200      # the finished runs of a suite its settings are checked against
GENERATION_FIELDS = ("scorer", "scorer_label", "reference_model", "backend")
SELECTION_FIELDS = {"groups": ("prompts_per_group",)}   # shown along with the setting they refine


def _eval_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(EvalSpec)}


def suite_specific_fields() -> set[str]:
    """The eval fields that only some suites use."""
    base = set(Suite.comparable_settings)
    names = set(GENERATION_FIELDS)
    for suite in suites():
        for key in suite.comparable_settings:
            if key not in base:
                names.add(key)
                names.update(SELECTION_FIELDS.get(key, ()))
    return names & _eval_fields()


# the fields whose choice decides which others a form shows (a suite's, a method's)
CHOSEN = ("suite", "method")


def hidden_fields(kind: str, chosen: Mapping[str, str]) -> set[str]:
    """The fields of a `kind` form that its chosen suite or method (`chosen`, field -> value)
    does not use: an eval's other suites' fields, a compression job's other methods' fields
    (`MethodInfo.fields`, from the catalog)."""
    if kind == "eval":
        return suite_specific_fields() - fields_for_suite(chosen.get("suite", ""))
    if "method" in chosen:
        return set(method_specific_fields(kind) - method_fields(kind, chosen["method"]))
    return set()


def fields_for_suite(suite_name: str) -> set[str]:
    """The suite-specific eval fields `suite_name` uses (every other one is hidden)."""
    try:
        suite = get_suite(suite_name)
    except SpecError:
        return suite_specific_fields()
    used = set(suite.comparable_settings)
    for key in suite.comparable_settings:
        used.update(SELECTION_FIELDS.get(key, ()))
    if suite.generates_text:
        used.update(GENERATION_FIELDS)
    return used & suite_specific_fields()


@dataclass(frozen=True)
class FormNotes:
    warnings: list[str]
    duplicates: dict[str, Duplicate]     # spec hash -> the newest finished twin
    estimate: SubmitEstimate | None = None   # generations and time (engine.planning_cost)


def data_after_suite_switch(old_suite: str, new_suite: str, data: str) -> str | None:
    """The eval `data` to put in the form when the suite changes from `old_suite` to
    `new_suite`: the default when `data` is the old suite's own built-in file (a crows CSV
    left as toxicity data), else None (keep what the user typed). From the suite registry."""
    try:
        old = get_suite(old_suite)
    except SpecError:
        return None
    name = data.strip().rstrip("/").rsplit("/", 1)[-1]
    if old_suite != new_suite and old.builtin_file and name == old.builtin_file:
        return EvalSpec.data
    return None


def comparability_warnings(store: Store, spec: EvalSpec) -> list[str]:
    """Where `spec` differs from every finished run of its suite in a setting that makes runs
    incomparable (the suite's `comparable_settings`), naming the value those runs use."""
    try:
        suite = get_suite(spec.suite)
    except SpecError:
        return []
    rows = store.query("SELECT settings FROM runs WHERE suite = ? AND status = 'done' "
                       "ORDER BY id DESC LIMIT ?", (spec.suite, RECENT_RUNS))
    settings = [loads(r["settings"], {}) or {} for r in rows]
    mine = spec.to_dict()
    out = []
    for key in suite.comparable_settings:
        if key not in mine:
            continue
        stored = Counter(repr(s[key]) for s in settings if key in s)
        if not stored or repr(mine[key]) in stored:
            continue
        out.append(f"{key}={mine[key]!r}, but the {sum(stored.values())} finished {spec.suite} runs "
                   f"here use {_others(stored)}: not comparable with them")
    return out


def _others(stored: Counter) -> str:
    """`128` or `128 (5) or 256 (1)`: the values the runs use, the commonest first."""
    common = stored.most_common(3)
    if len(common) == 1:
        return common[0][0]
    return " or ".join(f"{v} ({n})" for v, n in common) + (" ..." if len(stored) > 3 else "")


def tiny_n_warning(spec: JobSpec) -> str | None:
    n = getattr(spec, "max_prompts", None)
    if isinstance(spec, EvalSpec) and n is not None and n < TINY_N:
        return f"max_prompts={n}: under {TINY_N} items, wide intervals and weak paired tests"
    return None


def form_notes(store: Store, specs: list[JobSpec]) -> FormNotes:
    """The warnings for what the form would queue, the specs that already ran (model names
    and study labels read as the references they stand for) and what queueing would cost."""
    warnings: list[str] = []
    duplicates: dict[str, Duplicate] = {}
    for given in specs:
        try:
            spec = canonical_spec(store, given)
        except UserError:
            spec = given                 # an ambiguous name: validation says so at ctrl+s
        if isinstance(spec, EvalSpec):
            warnings += comparability_warnings(store, spec)
            tiny = tiny_n_warning(spec)
            if tiny:
                warnings.append(tiny)
        found = finished_duplicates(store, spec)
        if found:
            duplicates[given.spec_hash()] = found[0]
    return FormNotes(list(dict.fromkeys(warnings)), duplicates, estimate_specs(store, specs))
