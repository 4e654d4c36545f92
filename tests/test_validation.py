"""The one validation entry (`api.validate`), used by `compfair submit`, the TUI form and study
planning: bad input is a `UserError` naming its field, refused before anything is queued. Also
the error mapping of the command line (UserError -> 2, a bug -> 1 with the traceback in the
log), and the queue's own writes: the interrupted-job guard and `list_jobs` in constant queries."""

from __future__ import annotations

import pytest

from engine import api, queue, worker_rows
from engine.cli import main
from engine.errors import ModelError, NotFound, UserError
from engine.specs import EvalSpec, PruneSpec, SpecError


def _study(tmp_path, teacher, scorer: str):
    path = tmp_path / "bad-scorer.toml"
    path.write_text(f'name = "bad-scorer"\nteacher = "{teacher}"\n'
                    '[[prune]]\nlabel = "mag"\nmethod = "magnitude"\nsparsity = 0.5\n'
                    f'[[eval]]\nsuite = "toxicity"\ndata = "builtin"\nscorer = "{scorer}"\n')
    return path


def test_a_bad_scorer_in_a_study_is_refused_before_anything_is_queued(tmp_path, tiny_gpt2, store,
                                                                       capsys):
    path = _study(tmp_path, tiny_gpt2, "perspective")
    code = main(["study", str(path), "--no-wait"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: toxicity scorer 'perspective' is unknown; use auto, offline, bilstm, profanity, "
        "detoxify[:variant or checkpoint path] or hf:<model id or folder>"]
    assert "Traceback" not in err
    assert queue.counts(store) == {}                       # not even the prune node
    assert store.query("SELECT name FROM studies") == []


def test_validate_names_the_scorer_field(tiny_gpt2, store):
    spec = EvalSpec(model=str(tiny_gpt2), data="builtin", scorer="perspective")
    with pytest.raises(SpecError) as err:
        api.validate(store, [spec])
    assert err.value.field == "scorer"
    assert isinstance(err.value, UserError)
    with pytest.raises(SpecError, match="detoxify variant or checkpoint '/no/ckpt'") as err:
        api.validate(store, [spec.replace(scorer="detoxify:/no/ckpt")])
    assert err.value.field == "scorer"
    api.validate(store, [spec.replace(scorer="profanity"), spec.replace(scorer=f"hf:{tiny_gpt2}")])
    with pytest.raises(SpecError, match="not in the local Hugging Face cache") as err:   # offline
        api.validate(store, [spec.replace(scorer="hf:some/model")])
    assert err.value.field == "scorer"


def test_a_suite_without_text_takes_no_scorer_check(tiny_gpt2, store):
    """CrowS-Pairs scores likelihoods, not continuations: its scorer field is not read."""
    api.validate(store, [EvalSpec(model=str(tiny_gpt2), suite="crows_pairs", data="builtin",
                                  scorer="perspective")])


def test_unknown_model_references_are_refused_with_their_field(tmp_path, tiny_gpt2, store):
    with pytest.raises(ModelError, match="does not exist") as err:
        api.validate(store, [EvalSpec(model=str(tmp_path / "no-such-model"), data="builtin")])
    assert err.value.field == "model" and isinstance(err.value, UserError)
    with pytest.raises(SpecError, match=r"job 999 \(a dependency\) does not exist") as err:
        api.validate(store, [PruneSpec(model="job:999")])
    assert err.value.field == "model"
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        api.validate(store, [EvalSpec(model="nobody-here/no-such-model", data="builtin")])
    assert queue.counts(store) == {}


def test_a_bad_calibration_file_names_its_field(tmp_path, tiny_gpt2, store):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text") as err:
        api.validate(store, [PruneSpec(model=str(tiny_gpt2), method="wanda", calibration_data=str(bad))])
    assert err.value.field == "calibration_data"
    # magnitude pruning reads no text: the same file is not read
    api.validate(store, [PruneSpec(model=str(tiny_gpt2), method="magnitude", calibration_data=str(bad))])


def test_submit_all_queues_nothing_when_one_spec_is_bad(tiny_gpt2, store):
    good = EvalSpec(model=str(tiny_gpt2), data="builtin")
    with pytest.raises(SpecError):
        api.submit_all(store, [good, good.replace(scorer="perspective")], start_worker=False)
    assert queue.counts(store) == {}
    assert len(api.submit_all(store, [good, good.replace(seed=1)], start_worker=False)) == 2


# -- the command line's error mapping ------------------------------------------------------------
def test_a_bug_is_exit_1_with_one_line_and_the_traceback_in_the_log(home, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("an internal slip\nsecond line")
    monkeypatch.setattr(api, "list_jobs", broken)
    assert main(["jobs"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: internal error: ValueError: an internal slip")
    log = (home.logs_dir / "cli.log").read_text()
    assert "Traceback" in log and "an internal slip" in log


def test_api_not_found_is_a_user_error(store, capsys):
    for call in (lambda: api.run_detail(store, 5), lambda: api.job_detail(store, 5),
                 lambda: api.move(store, 5, 1), lambda: queue.cancel(store, 5)):
        with pytest.raises(NotFound):
            call()
    assert main(["show", "--job", "5"]) == 2


# -- queue writes -----------------------------------------------------------------------------------
def test_an_interrupted_job_is_requeued_only_by_the_worker_holding_it(store):
    job_id = queue.submit(store, EvalSpec(model="gpt2"))
    assert queue.claim(store, "worker-a")["id"] == job_id
    # worker-a was taken for dead; worker-b took the job over
    store.conn.execute("UPDATE jobs SET status = 'queued', worker_id = NULL WHERE id = ?", (job_id,))
    store.conn.commit()
    assert queue.claim(store, "worker-b")["id"] == job_id
    assert not queue.requeue_interrupted(store, job_id, "worker-a")
    row = queue.job(store, job_id)
    assert (row["status"], row["worker_id"]) == ("running", "worker-b")
    assert queue.requeue_interrupted(store, job_id, "worker-b")
    row = queue.job(store, job_id)
    assert (row["status"], row["worker_id"], row["attempts"]) == ("queued", None, 1)


def test_worker_rows_are_written_by_the_queue(store):
    worker_rows.register_worker(store, "host-1", 1, status="starting", log_path="/tmp/w.log")
    worker_rows.register_worker(store, "host-1", 1, status="idle", log_path="/tmp/w.log")   # upsert
    job_id = queue.submit(store, EvalSpec(model="gpt2"))
    queue.claim(store, "host-1")
    store.conn.execute("UPDATE jobs SET heartbeat_at = 0 WHERE id = ?", (job_id,))
    store.conn.commit()
    worker_rows.worker_heartbeat(store, "host-1", job_id)
    assert store.one("SELECT status FROM workers WHERE id = 'host-1'")["status"] == "busy"
    assert queue.job(store, job_id)["heartbeat_at"] > 0
    worker_rows.stop_worker(store, "host-1")
    assert [w["status"] for w in store.query("SELECT status FROM workers")] == ["stopped"]


def test_list_jobs_runs_a_constant_number_of_queries(store):
    first = queue.submit(store, EvalSpec(model="gpt2"))
    ids = [queue.submit(store, EvalSpec(model="gpt2", seed=i), depends_on=[first]) for i in range(49)]
    selects: list[str] = []
    store.conn.set_trace_callback(lambda sql: selects.append(sql) if sql.lstrip().upper().startswith("SELECT") else None)
    try:
        jobs = api.list_jobs(store)
    finally:
        store.conn.set_trace_callback(None)
    assert len(jobs) == 50
    assert len(selects) <= 2, selects
    by_id = {j["id"]: j for j in jobs}
    assert by_id[first]["depends_on"] == [] and all(by_id[i]["depends_on"] == [first] for i in ids)
    assert queue.dependencies_of(store, [first, ids[0]]) == {first: [], ids[0]: [first]}


def test_a_stopped_worker_puts_its_job_back_to_resume(home, store, monkeypatch):
    """SIGTERM while a job runs (`Interrupted`): the job goes back to the queue, the attempt
    does not count, and the worker's row is marked stopped."""
    import engine.worker as worker_module

    def stopped(ctx):
        raise worker_module.Interrupted("SIGTERM")
    monkeypatch.setattr(worker_module, "run_job_kind", stopped)
    job_id = queue.submit(store, EvalSpec(model="gpt2"))
    worker = worker_module.Worker(home, once=True, idle_exit_s=None)
    worker.run()
    row = queue.job(store, job_id)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("queued", 0, None)
    assert row["error"] == "worker stopped; will resume"
    assert store.one("SELECT status FROM workers WHERE id = ?", (worker.id,))["status"] == "stopped"
