"""`compfair submit ... --log mlflow=URI --log wandb`: a real eval job on a tiny model, run by
the worker, logged to an MLflow file store and a W&B offline run; read back with MLflow's
client and from the W&B run file (its records, through wandb's own protobuf classes)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from engine.cli import main
from engine.paths import Home
from engine.store import Store
from engine.worker import Worker

BLOCK = 32768          # the W&B transaction log is LevelDB's log format: 32 KiB blocks


def wandb_records(path: Path) -> list:
    """The protobuf records of a `.wandb` run file (7-byte W&B header, then LevelDB log
    records: crc32, little-endian length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto.wandb_internal_pb2 import Record
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, records, parts = 7, [], b""
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


def test_submit_log_mlflow_and_wandb(tiny_gpt2, compfair_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    (tmp_path / "wandb-dir").mkdir()
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["submit", "eval", "--model", str(tiny_gpt2), "--suite", "perplexity", "--data", "builtin",
                 "--context-length", "64", "--stride", "32", "--bootstrap-samples", "100",
                 "--no-worker", "--json", "--log", f"mlflow={uri}", "--log", "wandb=compfair-test"]) == 0
    import torch
    torch.set_num_threads(1)
    home = Home.resolve(compfair_home)
    Worker(home, once=True, idle_exit_s=None).run()
    store = Store(home)
    try:
        job = store.one("SELECT id, status, result FROM jobs")
        assert job["status"] == "done"
        run = store.run_for_job(job["id"])
        stored = {m["name"]: m for m in store.metrics(run["id"])}
        events = [e["message"] for e in store.events(job["id"])]
    finally:
        store.close()
    assert any(e.startswith(f"logged to mlflow={uri}") for e in events), events
    assert any(e.startswith("logged to wandb=compfair-test") for e in events), events

    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    logged, = client.search_runs([client.get_experiment_by_name("compfair").experiment_id])
    assert logged.data.params["suite"] == "perplexity" and logged.data.params["job_id"] == str(job["id"])
    assert logged.data.params["context_length"] == "64"
    ppl = stored["perplexity"]
    assert logged.data.metrics["perplexity"] == pytest.approx(ppl["value"])
    assert logged.data.metrics["perplexity_ci_low"] == pytest.approx(ppl["ci_low"])
    assert logged.data.metrics["perplexity_ci_high"] == pytest.approx(ppl["ci_high"])
    assert logged.info.status == "FINISHED"

    run_file, = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history", "summary"} <= kinds
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.project == "compfair-test"
    config = {i.key: i.value_json for r in records if r.WhichOneof("record_type") == "run"
              for i in r.run.config.update}
    assert config["suite"] == '"perplexity"'
    history = {i.key or "/".join(i.nested_key): i.value_json for r in records
               if r.WhichOneof("record_type") == "history" for i in r.history.item}
    summary = {u.key or "/".join(u.nested_key): u.value_json for r in records
               if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    for figures in (history, summary):
        assert float(figures["perplexity"]) == pytest.approx(ppl["value"])
        assert float(figures["perplexity_ci_high"]) == pytest.approx(ppl["ci_high"])


def test_bad_log_target_queues_nothing(tiny_gpt2, store, capsys):
    assert main(["submit", "eval", "--model", str(tiny_gpt2), "--no-worker",
                 "--log", "tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "'tensorboard'" in err and "mlflow" in err and len(err.strip().splitlines()) == 1
    assert store.one("SELECT count(*) AS n FROM jobs")["n"] == 0


def test_study_log_mlflow_jobs_and_report_artifacts(tiny_gpt2, compfair_home, tmp_path, capsys):
    study = tmp_path / "tiny.toml"
    study.write_text(f'name = "tiny"\nteacher = "{tiny_gpt2}"\n'
                     '[[prune]]\nlabel = "mag"\nmethod = "magnitude"\nsparsity = 0.5\n'
                     '[[eval]]\nsuite = "perplexity"\ndata = "builtin"\ncontext_length = 64\n'
                     'stride = 32\nbootstrap_samples = 100\n')
    uri = (tmp_path / "mlruns").as_uri()
    import torch
    torch.set_num_threads(1)
    code = main(["study", str(study), "--inline", "--log", f"mlflow={uri}", "-o", str(tmp_path / "report")])
    assert code == 0, capsys.readouterr().err
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("compfair").experiment_id])
    by_kind = {}
    for run in runs:
        by_kind.setdefault(run.data.tags["compfair.kind"], []).append(run)
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [("eval", 2), ("prune", 1), ("report", 1)]
    prune, = by_kind["prune"]
    assert prune.data.params["method"] == "magnitude"
    assert prune.data.metrics["overall_sparsity"] == pytest.approx(0.5)
    report, = by_kind["report"]
    names = {a.path for a in client.list_artifacts(report.info.run_id)}
    written = {p.name for p in (tmp_path / "report").iterdir()}
    assert names == written and any(n.endswith(".md") for n in names)


def test_settings_file_logs_every_job(tiny_gpt2, compfair_home, tmp_path, capsys):
    """`[tracking] log = [...]` in the home's settings.toml logs jobs submitted without --log."""
    uri = (tmp_path / "mlruns").as_uri()
    home = Home.resolve(compfair_home)
    (home.root / "settings.toml").write_text(f'[tracking]\nlog = ["mlflow={uri}"]\n')
    assert main(["submit", "eval", "--model", str(tiny_gpt2), "--suite", "perplexity", "--data", "builtin",
                 "--context-length", "64", "--stride", "32", "--bootstrap-samples", "100",
                 "--no-worker", "--json"]) == 0
    import torch
    torch.set_num_threads(1)
    Worker(home, once=True, idle_exit_s=None).run()
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    logged, = client.search_runs([client.get_experiment_by_name("compfair").experiment_id])
    assert logged.data.params["suite"] == "perplexity" and "perplexity" in logged.data.metrics


@pytest.mark.parametrize("value, words", [('"mlflow"', "must be a list"),
                                          ('["tensorboard"]', "unknown tracker 'tensorboard'")])
def test_bad_tracking_setting_is_one_line(tmp_path, value, words):
    from engine.settings import SettingsError, load_settings
    (tmp_path / "settings.toml").write_text(f"[tracking]\nlog = {value}\n")
    with pytest.raises(SettingsError, match=words):
        load_settings(tmp_path)
