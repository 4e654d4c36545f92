"""The engine's public API: what the command line and the terminal app call, and the only part
of the engine the app imports (tests/test_tui_hygiene.py). Reads the store, submits and steers
jobs, starts a detached worker; never computes a metric itself.

`submitting` (submit_jobs: the one way user-given jobs are queued; cancel, retry, move),
`run_reads` (the runs table and a run's detail), `job_reads` (the queue, a job's events and progress),
`exports` (metric exports, a study's judgement, paths as this home reads them). Below them, the names
the app reads from the engine's lower layers, re-exported here so that it reads them through
this API: specs and their fields, the suite registry, settings, the store."""

from __future__ import annotations

from engine.api.job_reads import (events, job_counts, job_detail, job_view, last_events, latest_progress,
                             latest_progress_many, list_jobs, model_refs)
from engine.api.exports import (cached_study_judgement, export_records, judge_study, metric_records,
                                open_store, paths_here, study_judgement_command, study_judgement_key)
from engine.api.run_reads import (SORT_COLUMNS, RunRow, count_runs, headline_metrics, list_runs,
                             model_view, models, run_detail)
from engine.api.submitting import (cancel, expand_sweep, move, retry, submit, submit_all, submit_jobs,
                                   worker_views, workers)
# comparing lives in engine.comparison
from engine.comparison import CompareCell, Comparison, comparability_warnings, compare
# the compression methods and quantization formats a form may offer
from engine.compression.methods import method_names
# the fields of a job kind that only some of its methods read (the form hides the others')
from engine.catalog.method_info import method_fields, method_specific_fields
from engine.compression.quant import GGUF_FORMATS, RTN_BITS
from engine.compression.records import SparsityRecord
# identical submissions (a spec that already ran: engine.already_ran)
from engine.already_ran import Duplicate, finished_duplicates
from engine.errors import CompareError, NotFound, SpecError, UserError
from engine.evaluation.suites import MetricSpec, Suite, find_metric, get_suite, suite_names, suites
from engine.formatting import fmt_count, fmt_time
from engine.job_status import ACTIVE, ENDED, UNSUCCESSFUL
from engine.launcher import ensure_worker
# model names and study labels as references, and the names shown for model:ID / job:ID
from engine.model_names import canonical_spec, ref_names, with_names
from engine.paths import Home, safe_name
# what a submission costs (generations, time measured on finished runs; engine.planning_cost)
from engine.planning_cost import SubmitEstimate, estimate_specs
from engine.settings import StatSettings, load_settings, run_ci_label
from engine.specs import (BACKENDS, DEVICES, DTYPES, SPEC_TYPES, DistillSpec, EvalSpec, JobSpec, PruneSpec,
                          spec_from_json)
from engine.store import Store, loads
from engine.study import study_record
# the one validation entry (CLI submit, the TUI form, studies)
from engine.validation import validate

__all__ = [name for name in dir() if not name.startswith("_") and name != "annotations"]
