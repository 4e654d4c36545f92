"""One validation entry for job specs, run before anything is queued: by `compfair submit`
(through `engine.api`), the TUI's new-job form and study planning alike.

A spec is already checked on its own when it is built (`engine.specs`: ranges, known suites,
methods, fields). This adds what needs the outside world, without loading a model or
importing torch (except for an explicit GPU device or a detoxify checkpoint path): model
references that can never resolve (missing paths, bad syntax, truncated weights or GGUF files,
a folder with a config but no weights, a config.json asking for custom code: `auto_map` or a
model_type transformers does not implement; an uncached hub id under HF_HUB_OFFLINE=1, a
`job:ID` that does not exist, failed, was cancelled or makes no model), a `cuda`/`mps` device
this machine lacks, local data files that cannot be read, scorer names, and every numeric
field inside its documented range (`engine.spec_values.FIELD_RANGES`). Hub data sets are left
to the job.
Every refusal is a `UserError` (exit code 2) with `field` set where the field is known."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from engine import queue
from engine.errors import UserError, ModelError
from engine.specs import DistillSpec, EvalSpec, JobSpec, SpecError, SPEC_TYPES
from engine.store import Store
from engine.job_status import UNSUCCESSFUL
from engine.compression.methods import get_method
from engine.compression.textdata import parse_source, read_file_texts
from engine.evaluation.suites import generation_suite_names, get_suite
from engine.model_refs import check_no_custom_code, check_ref_id, resolve, resolve_offline_status
from engine.model_names import canonical_ref
from engine.spec_values import check_ranges

JOB_PREFIX = "job:"


def validate(store: Store, specs: Iterable[JobSpec], *,
             pending_prefixes: Sequence[str] = ()) -> None:
    """Refuse specs that could only fail when they run (raises a `UserError`).

    `pending_prefixes`: prefixes of model references to jobs not queued yet (a study's `@node`
    references); they are skipped. All model references are checked before any input file."""
    specs = list(specs)
    for spec in specs:
        check_ranges(spec)        # numeric fields in their documented ranges (also when built)
        check_device(spec)
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
    for field, ref in spec.model_refs().items():
        if any(ref.startswith(p) for p in pending_prefixes):
            continue
        with _about(field):
            ref = canonical_ref(store, ref) or ref     # a model's name or a study label
        if ref.startswith(JOB_PREFIX):
            _check_job_ref(store, ref[len(JOB_PREFIX):], field)
            continue
        with _about(field):
            source = resolve(ref, store)
            if (source.origin == "hub" and source.model_id is None
                    and os.environ.get("HF_HUB_OFFLINE") == "1"
                    and resolve_offline_status(ref) != "local"):
                raise ModelError(f"model {ref!r} is not in the local Hugging Face cache and "
                                 "HF_HUB_OFFLINE=1 forbids downloading it; give a local folder, "
                                 "a .gguf file or 'smollm2', or download it first")
            check_custom_code(ref, source)
        if field == "model" and isinstance(spec, EvalSpec):
            check_positions(spec, Path(source.load_path))


def check_custom_code(ref: str, source) -> None:
    """A model folder (or a cached hub model) whose config.json asks for code of its own
    (`auto_map`, a model_type transformers does not implement) is refused now: the job would
    fail when it loads, since compfair never runs a model's code (engine.model_refs)."""
    if source.gguf_file is not None:
        return
    if source.origin == "hub":
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(ref, "config.json")
        except Exception:  # noqa: BLE001 - a malformed id: resolve and the job say why
            return
        if isinstance(cached, str):
            check_no_custom_code(Path(cached), f"model {ref!r}")
        return
    config = Path(source.load_path) / "config.json"
    if config.is_file():
        check_no_custom_code(config, f"model folder {source.load_path!r}")


POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")   # as the sampler reads them


def check_positions(spec: EvalSpec, folder: Path) -> None:
    """A generation suite's `max_new_tokens` leaves room for at least one prompt token inside
    the model's positions, where the model's config.json is on disk (a hub id or GGUF file is
    left to the job, which refuses the same with one line)."""
    import json

    config = folder / "config.json"
    if spec.suite not in generation_suite_names() or not config.is_file():
        return
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return                                  # check_model_files reports an unreadable config
    limit = next((data[k] for k in POSITION_KEYS if isinstance(data.get(k), int) and data[k] > 0), None)
    if limit is not None and spec.max_new_tokens >= limit:
        raise SpecError(f"max_new_tokens must be below the model's {limit} positions (at least one "
                        f"is the prompt's), got {spec.max_new_tokens}", "max_new_tokens")


def _check_job_ref(store: Store, number: str, field: str) -> None:
    """`job:ID` names a job that exists, makes a model, and has not failed or been cancelled
    (a queued or running one is waited for; a done one is resolved by the job)."""
    if not number.isdigit():
        return                              # model_refs says what the syntax is
    with _about(field):
        check_ref_id(JOB_PREFIX + number, number)
    row = queue.job(store, int(number))
    if row is None:
        raise SpecError(f"job {number} (a dependency) does not exist", field)
    spec_cls = SPEC_TYPES.get(row["kind"])
    if spec_cls is not None and not spec_cls.produces_model:
        raise SpecError(f"job {number} (a dependency) is of kind {row['kind']!r}, "
                        "which makes no model; give a prune, quantize or distill job", field)
    if row["status"] in UNSUCCESSFUL:
        raise SpecError(f"job {number} (a dependency) is {row['status']} and will make no model; "
                        f"retry it first (`compfair retry {number}`) or give another model", field)


def check_device(spec: JobSpec) -> None:
    """An explicit `cuda`, `cuda:N` or `mps` device exists on this machine (torch is imported
    only then). `auto` and `cpu` always do."""
    device = getattr(spec, "device", "auto")
    if device in ("auto", "cpu"):
        return
    import torch
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0) if device.partition(":")[2].isdigit() else 0
        if count == 0:
            raise SpecError(f"device {device!r}: this machine has no usable CUDA GPU (torch "
                            f"{torch.__version__}" + (", built without CUDA" if torch.version.cuda is None
                                                      else "") + "); use --device cpu or auto", "device")
        if index >= count:
            raise SpecError(f"device {device!r}: this machine has {count} CUDA GPU(s), "
                            f"cuda:0 to cuda:{count - 1}", "device")
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpecError("device 'mps': MPS (Apple GPU) is not available here; use --device cpu or auto",
                        "device")


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
    suite = get_suite(spec.suite)
    if suite.generates_text:               # it samples continuations, and so scores them
        from engine.evaluation.scorers import check_scorer_name  # on use: numpy
        with _about("scorer"):
            check_scorer_name(spec.scorer)
    key = ("eval", spec.suite, spec.data, spec.max_prompts, spec.domains, spec.groups,
           spec.prompts_per_group, spec.seed)
    if key not in checked:
        checked.add(key)
        with _about("data"):
            suite.check_inputs(spec)       # reads a local data file; DataError when unusable


def text_fields(spec: JobSpec) -> tuple[str, ...]:
    """The fields of a compression spec naming text its job will read: a distillation's
    `data`; the calibration data of a method that needs it or of a recovery fine-tune."""
    if isinstance(spec, DistillSpec):
        return ("data",)
    method = getattr(spec, "method", None)
    if method is None or not hasattr(spec, "calibration_data"):
        return ()
    needs = get_method(method, spec.kind).needs_calibration_text or \
        getattr(spec, "recovery_steps", 0) > 0
    return ("calibration_data",) if needs else ()


def check_text_source(value: str) -> None:
    """A text source that is a local file must exist and be readable (DataError)."""
    source = parse_source(value)
    if source.kind == "file":
        read_file_texts(Path(source.ref))
