"""One validation entry for job specs, run before anything is queued: by `compfair submit`
(through `engine.api`), the TUI's new-job form and study planning alike.

A spec is already checked on its own when it is built (`engine.specs`: ranges, known suites,
methods, fields). This adds what needs the outside world, without loading a model or
importing torch: model references that can never resolve (missing paths, bad syntax,
truncated weights, an uncached hub id under HF_HUB_OFFLINE=1, a `job:ID` that does not exist),
local data files that cannot be read, and scorer names. Hub data sets are left to the job.
Every refusal is a `UserError` (exit code 2) with `field` set where the field is known."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from engine import queue
from engine.errors import UserError
from engine.specs import DistillSpec, EvalSpec, JobSpec, SpecError
from engine.store import Store

JOB_PREFIX = "job:"


def validate(store: Store, specs: Iterable[JobSpec], *,
             pending_prefixes: Sequence[str] = ()) -> None:
    """Refuse specs that could only fail when they run (raises a `UserError`).

    `pending_prefixes`: prefixes of model references to jobs not queued yet (a study's `@node`
    references); they are skipped. All model references are checked before any input file."""
    specs = list(specs)
    for spec in specs:
        check_model_refs(store, spec, pending_prefixes)
    check_inputs(specs)


@contextmanager
def _about(field: str) -> Iterator[None]:
    """Name `field` on a UserError raised inside, unless it already names one."""
    try:
        yield
    except UserError as exc:
        if exc.field is None:
            exc.field = field
        raise


# -- model references ---------------------------------------------------------------------------
def check_model_refs(store: Store, spec: JobSpec, pending_prefixes: Sequence[str] = ()) -> None:
    """Each model reference of `spec` resolves (engine.model_refs: no torch, so submitting
    stays quick); `job:ID` names an existing job."""
    from engine.model_refs import ModelError, resolve, resolve_offline_status
    for field, ref in spec.model_refs().items():
        if any(ref.startswith(p) for p in pending_prefixes):
            continue
        if ref.startswith(JOB_PREFIX):
            number = ref[len(JOB_PREFIX):]
            if number.isdigit() and queue.job(store, int(number)) is None:
                raise SpecError(f"job {number} (a dependency) does not exist", field)
            continue
        with _about(field):
            source = resolve(ref, store)
            if (source.origin == "hub" and source.model_id is None
                    and os.environ.get("HF_HUB_OFFLINE") == "1"
                    and resolve_offline_status(ref) != "local"):
                raise ModelError(f"model {ref!r} is not in the local Hugging Face cache and "
                                 "HF_HUB_OFFLINE=1 forbids downloading it; give a local folder, "
                                 "a .gguf file or 'smollm2', or download it first")


# -- inputs: data files and scorers -------------------------------------------------------------
def check_inputs(specs: Iterable[JobSpec]) -> None:
    """Read each local input once (several specs of a sweep share one) and check scorer names,
    so that a malformed file is reported now, not when the job runs. A job given a bad file
    anyway fails with the same one-line reason."""
    checked: set[tuple] = set()
    for spec in specs:
        if isinstance(spec, EvalSpec):
            _check_eval_inputs(spec, checked)
            continue
        for field in text_fields(spec):
            value = getattr(spec, field)
            if ("text", value) not in checked:
                checked.add(("text", value))
                with _about(field):
                    check_text_source(value)


def _check_eval_inputs(spec: EvalSpec, checked: set[tuple]) -> None:
    from engine.evaluation.suites import get_suite
    suite = get_suite(spec.suite)
    if suite.generates_text:               # it samples continuations, and so scores them
        from engine.evaluation.scorers import check_scorer_name
        check_scorer_name(spec.scorer)
    key = ("eval", spec.suite, spec.data, spec.max_prompts, spec.domains, spec.groups,
           spec.prompts_per_group, spec.seed)
    if key not in checked:
        checked.add(key)
        suite.check_inputs(spec)           # reads a local data file; DataError when unusable


def text_fields(spec: JobSpec) -> tuple[str, ...]:
    """The fields of a compression spec naming text its job will read: a distillation's
    `data`; the calibration data of a method that needs it or of a recovery fine-tune."""
    if isinstance(spec, DistillSpec):
        return ("data",)
    method = getattr(spec, "method", None)
    if method is None or not hasattr(spec, "calibration_data"):
        return ()
    from engine.compression.methods import get_method
    needs = get_method(method, spec.kind).needs_calibration_text or \
        getattr(spec, "recovery_steps", 0) > 0
    return ("calibration_data",) if needs else ()


def check_text_source(value: str) -> None:
    """A text source that is a local file must exist and be readable (DataError)."""
    from engine.compression.textdata import parse_source, read_file_texts
    source = parse_source(value)
    if source.kind == "file":
        read_file_texts(Path(source.ref))
