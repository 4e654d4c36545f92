"""`compfair bench`'s batched-generate baseline and the eval job's phase timings (issue 32).

The baseline must sample the distribution compfair's sampler samples (nucleus only, the job's
top-p, temperature and budget), the whole-job line must be the sum of the job's stored phases,
and `compfair logs` / `show --job` must show where a finished job spent its time. No test here
asserts a speed: timings belong to `compfair bench`, not to unit tests."""

from __future__ import annotations

import pytest

from engine.evaluation.phases import PHASES, JobPhases


@pytest.fixture
def recorded_generate(monkeypatch):
    """Every `generate` call's generation config and k, recorded where transformers receives it."""
    from transformers.generation.utils import GenerationMixin
    calls: list = []
    real = GenerationMixin.generate

    def recording(self, *args, **kwargs):
        calls.append(kwargs.get("generation_config"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    return calls


@pytest.fixture
def bench(home, tiny_gpt2, recorded_generate):
    from engine.bench import BenchSettings, run_bench
    settings = BenchSettings(model=str(tiny_gpt2), prompts=5, k=3, new_tokens=4, top_p=0.8,
                             skip_compression=True, detoxify=False, home=str(home.root))
    return run_bench(settings, say=lambda message: None), recorded_generate


def test_batched_generate_samples_what_the_compfair_sampler_samples(bench):
    result, calls = bench
    job, gen = result["compfair"]["sampling"], result["generate"]
    assert calls and all(c is not None for c in calls)
    for config in calls:
        assert config.do_sample is True and config.top_k == 0          # nucleus only
        assert config.top_p == job["top_p"] == 0.8
        assert config.temperature == job["temperature"]
        assert config.num_return_sequences == job["samples_per_prompt"] == 3
        assert config.repetition_penalty in (None, 1.0) and config.num_beams in (None, 1)
    # the timed calls (not the warm-up) use the job's token budget and the chosen batch size
    assert [c.max_new_tokens for c in calls].count(job["max_new_tokens"]) >= len(calls) - 1
    assert gen["sampling"]["top_k"] == 0 and gen["sampling"]["max_new_tokens"] == 4
    assert gen["batch_prompts"] in (1, 4) and set(gen["search_generations_per_s"]) >= {"1", "4"}
    assert gen["generations"] == result["compfair"]["generations"] == 15
    assert gen["torch_threads"] == result["machine"]["torch_threads"]


def test_whole_job_line_is_the_sum_of_its_phases(bench):
    from engine.bench import summary_tables
    result, _ = bench
    fast = result["compfair"]
    phases = fast["phases"]
    assert fast["job_s"] == pytest.approx(sum(phases[p] for p in PHASES))
    assert fast["job_cpu_s"] == pytest.approx(sum(phases["cpu"][p] for p in PHASES))
    assert fast["phase_s"] == pytest.approx(phases["generation"], abs=0.5)
    assert fast["quality_s"] == phases["fluency"] > 0
    assert 0 < result["ratio"]["fluency_share_of_job"] < 1
    tables = {title: rows for title, _, rows in summary_tables(result)}
    lines = next(rows for title, rows in tables.items() if "prompts x k=" in title)
    whole = next(row for row in lines if row[0].startswith("compfair whole eval job"))
    assert float(whole[2]) == pytest.approx(fast["job_s"], abs=0.05)
    assert all(row[-1] for row in lines)                                # a load average on every line
    per_phase = tables["the compfair eval job, phase by phase (stored with its run)"]
    added = [float(row[1]) for row in per_phase if row[0] in PHASES]
    assert per_phase[-1][0] == "whole job" and float(per_phase[-1][1]) == pytest.approx(sum(added), abs=0.02)


def test_logs_and_show_job_print_phase_seconds(home, store, tiny_gpt2, capsys):
    from engine import queue
    from engine.cli import main
    from engine.specs import EvalSpec
    from engine.store import loads
    from engine.worker import Worker

    job = queue.submit(store, EvalSpec(model=str(tiny_gpt2), data="builtin", scorer="profanity",
                                       max_prompts=3, samples_per_prompt=2, max_new_tokens=4,
                                       bootstrap_samples=100))
    assert Worker(home, once=True, idle_exit_s=None).run() == 1
    stored = JobPhases.from_summary(loads(store.run_for_job(job)["summary"], {}))
    assert stored is not None and stored.fluency > 0 and stored.scoring_overlapped is not None
    assert stored.to_dict()["total"] == pytest.approx(sum(getattr(stored, p) for p in PHASES), abs=0.002)
    for argv in (["logs", str(job)], ["show", "--job", str(job)]):
        capsys.readouterr()
        assert main(["--home", str(home.root), *argv]) == 0
        out = capsys.readouterr().out
        assert f"job {job}: time per phase" in out, argv
        for name in (*PHASES, "scoring (overlapped", "total"):
            assert name in out, (argv, name)
    capsys.readouterr()
    assert main(["--home", str(home.root), "logs", str(job)]) == 0
    assert "time: setup" in capsys.readouterr().out        # the runner's own log line


def test_runs_stored_before_phases_show_none():
    assert JobPhases.from_summary({"generation_seconds": 3.0}) is None
    assert JobPhases.from_summary(None) is None
    phases = JobPhases(1.0, 2.0, 0.5, 0.25, 0.3, {p: 1.0 for p in PHASES})
    again = JobPhases.from_summary({"phase_seconds": phases.to_dict()})
    assert again == phases and again.total == 3.75 and again.cpu_total == 4.0
    assert phases.rows()[-1][:2] == ["total", "3.75"]
