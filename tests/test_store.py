"""The store: migrations from blank, schema, permissions, sample de-duplication."""

import stat

from engine import queue
from engine.migrations import MIGRATIONS, migrate
from engine.specs import EvalSpec
from engine.store import Store

EXPECTED_COLUMNS = {
    "jobs": {"id", "kind", "spec", "spec_hash", "label", "study", "status", "priority", "created_at",
             "started_at", "finished_at", "worker_id", "heartbeat_at", "attempts", "max_attempts",
             "error", "cancel_requested", "progress", "progress_message", "result", "lease"},
    "job_deps": {"job_id", "depends_on"},
    "workers": {"id", "pid", "host", "started_at", "heartbeat_at", "status", "log_path", "device"},
    "models": {"id", "name", "source", "origin", "path", "architecture", "n_layers", "n_params",
               "n_nonzero", "size_bytes", "parent_id", "method", "method_params", "job_id",
               "latency_ms", "sparsity", "created_at", "extra"},
    "runs": {"id", "job_id", "model_id", "suite", "status", "scorer", "scorer_version", "settings",
             "data_source", "device", "created_at", "finished_at", "n_items", "n_samples", "summary"},
    "metrics": {"id", "run_id", "name", "subset", "value", "ci_low", "ci_high", "n", "higher_is_better"},
    "samples": {"id", "run_id", "key", "item_index", "sample_index", "domain", "group_name", "prompt",
                "completion", "prompt_toxicity", "toxicity", "sentiment", "scores", "created_at",
                "continuation_nll", "continuation_tokens"},
    "events": {"id", "job_id", "ts", "kind", "level", "message", "data"},
    "studies": {"name", "source", "description", "plan", "created_at", "updated_at"},
}


def test_blank_database_migrates_to_the_exact_schema(home):
    store = Store(home)
    tables = set(store.db.table_names())
    assert set(EXPECTED_COLUMNS) | {"_migrations"} <= tables
    for table, columns in EXPECTED_COLUMNS.items():
        assert set(store.db[table].columns_dict) == columns, table
    assert {r["number"] for r in store.db["_migrations"].rows} == {m[0] for m in MIGRATIONS}
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert migrate(store.db) == []  # idempotent: nothing left to apply


def test_store_files_are_private_to_the_owner(home):
    Store(home)
    assert stat.S_IMODE(home.db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700


def test_samples_are_never_duplicated_and_runs_resume(store):
    job_id = queue.submit(store, EvalSpec(model="gpt2"))
    run_id = store.start_run(job_id, None, "toxicity", {"k": 2}, "profanity", "1", "builtin", "cpu")
    assert store.start_run(job_id, None, "toxicity", {"k": 2}, "profanity", "1", "builtin", "cpu") == run_id
    store.add_samples(run_id, [{"key": "0:0", "item_index": 0, "sample_index": 0, "completion": "a"}])
    store.add_samples(run_id, [{"key": "0:0", "item_index": 0, "sample_index": 0, "completion": "b"},
                               {"key": "0:1", "item_index": 0, "sample_index": 1, "completion": "c"}])
    assert [s["completion"] for s in store.samples(run_id)] == ["a", "c"]
    store.finish_run(run_id, [{"name": "m", "value": 1.0}])
    run = store.run(run_id)
    assert (run["status"], run["n_samples"], run["n_items"]) == ("done", 2, 1)


def test_path_traversal_in_names_stays_inside_home(home):
    for name in ("../../etc/passwd", "/abs/path", "a/../../b", "..", ""):
        target = home.inside(home.models_dir, name)
        assert home.models_dir.resolve() in target.parents
