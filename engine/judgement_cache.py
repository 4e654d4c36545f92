"""A study's judgement (`engine.report.judge_study`: every model against its teacher, one
family, the report's sentences) kept on disk, so that a view of it (the TUI's models x metrics)
opens at once instead of re-running every paired bootstrap (30-60 s on a real study).

The cache lives under the home: `cache/judgements/<study>-<key>.json`, owner-only (0600),
written atomically (a temporary file renamed over it), one file per study (a new result
replaces the older ones). `key` hashes everything the judgement depends on
(`dependencies`): the study's plan, every job of the plan with its status and end time, each
eval job's run with its status, end time and stored metrics, the settings in force
(`Settings.to_dict()`), and the code (`CACHE_FORMAT`, compfair's version and the engine's
source files). A cached judgement under another key is still returned (`load`), marked
stale, for a view to show while it recomputes.

Recomputing runs in a child process (`command`: `python -m engine.judgement_cache HOME STUDY`) that a
view can kill when the user leaves it: a Python thread cannot be stopped, and a minute of
bootstraps in the app's own process would also slow its screen. The child prints its progress
as JSON lines on stdout (`{"total": N}`, `{"done": k, "total": N}`, `{"deciding": true}`,
`{"saved": PATH, "key": KEY, "seconds": S}`) and writes the cache itself."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import engine
from engine.paths import OWNER_FILE_MODE, OWNER_FOLDER_MODE, Home, safe_name
from engine.store import Store
from engine.errors import UserError
from engine.settings import load_settings
from engine.study import study_record

# Bump when the file's layout or what a judgement holds changes: older files are then stale.
CACHE_FORMAT = 1
_ENGINE_DIR = Path(engine.__file__).resolve().parent


@dataclass
class Cached:
    """A judgement read back from the cache."""

    study: str
    key: str
    judged: Any             # engine.report.StudyJudgement
    computed_at: float      # when it was computed (epoch seconds)
    seconds: float          # how long computing it took
    path: Path


def cache_folder(home: Home) -> Path:
    folder = home.cache_dir / "judgements"
    folder.mkdir(parents=True, exist_ok=True, mode=OWNER_FOLDER_MODE)
    return folder


def _files_of(home: Home, study: str) -> list[Path]:
    """This study's cache files (another study whose name starts the same is not matched)."""
    pattern = re.compile(re.escape(safe_name(study)) + r"-[0-9a-f]{16}\.json")
    folder = home.cache_dir / "judgements"
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if pattern.fullmatch(p.name)]


# -- what a judgement depends on ----------------------------------------------------------------
def code_fingerprint() -> str:
    """compfair's version, this module's format and the engine's source files (name, size,
    modification time): an upgraded or edited engine judges afresh."""
    digest = hashlib.sha256(f"{CACHE_FORMAT} {engine.__version__}".encode())
    for path in sorted(_ENGINE_DIR.rglob("*.py")):
        try:
            st = path.stat()
        except OSError:
            continue
        digest.update(f"{path.relative_to(_ENGINE_DIR)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def plan_job_ids(plan: dict) -> list[int]:
    ids = [m["job_id"] for m in plan.get("models", {}).values() if m.get("job_id")]
    return ids + [e["job_id"] for e in plan.get("evals", []) if e.get("job_id")]


def comparisons(plan: dict) -> int:
    """How many (model, suite) comparisons against the teacher the plan holds (planned; a
    model or run that is missing is skipped when judging)."""
    evals = plan.get("evals", [])
    teacher = {e["suite"] for e in evals if e["model"] == "teacher"}
    return len({(e["model"], e["suite"]) for e in evals
                if e["model"] != "teacher" and e["suite"] in teacher})


def dependencies(store: Store, record: dict, settings) -> dict:
    """Everything a study's judgement depends on, as plain data (the cache key's input)."""
    plan = record["plan"]
    ids = sorted(set(plan_job_ids(plan)))
    jobs: list = []
    runs: list = []
    metrics: list = []
    for start in range(0, len(ids), 500):       # SQLite's limit on bound parameters
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        jobs += [[r["id"], r["status"], r["finished_at"], r["attempts"]] for r in store.query(
            f"SELECT id, status, finished_at, attempts FROM jobs WHERE id IN ({marks}) ORDER BY id",
            chunk)]
        found = store.query(f"SELECT id, job_id, model_id, status, finished_at FROM runs "
                            f"WHERE job_id IN ({marks}) ORDER BY id", chunk)
        runs += [[r["id"], r["job_id"], r["model_id"], r["status"], r["finished_at"]] for r in found]
        run_ids = [r["id"] for r in found]
        if run_ids:
            metrics += [[r["run_id"], r["n"], r["last"], r["total"]] for r in store.query(
                f"SELECT run_id, count(*) AS n, max(id) AS last, total(value) AS total FROM metrics "
                f"WHERE run_id IN ({','.join('?' * len(run_ids))}) GROUP BY run_id ORDER BY run_id",
                run_ids)]
    return {"code": code_fingerprint(), "study": record["name"], "plan": plan,
            "settings": settings.to_dict(), "jobs": jobs, "runs": runs, "metrics": metrics}


def key_of(deps: dict) -> str:
    text = json.dumps(deps, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current_key(store: Store, name: str, settings=None) -> str:
    """The key a judgement of study `name` would have now (a few indexed queries)."""
    settings = settings or load_settings(store.home.root)
    return key_of(dependencies(store, study_record(store, name), settings))


# -- to and from JSON ---------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy scalars and other stragglers as JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def to_json(judged) -> dict:
    """A `StudyJudgement` as JSON-ready data (metrics keyed by (name, subset) become lists)."""
    def entry(e) -> dict:
        return {"label": e.label, "kind": e.kind, "params": e.params, "model": e.model,
                "compress_job": e.compress_job, "runs": e.runs,
                "metrics": {suite: list(rows.values()) for suite, rows in e.metrics.items()}}
    return {"entries": [entry(e) for e in judged.entries], "teacher": judged.teacher.label,
            "problems": judged.problems, "significance": judged.significance,
            "flips": judged.flips, "gates": judged.gates}


def from_json(data: dict):
    """The `StudyJudgement` that `to_json` wrote."""
    from engine.report import ModelEntry, StudyJudgement  # on use: numpy, rich
    entries = [ModelEntry(e["label"], e["kind"], e["params"], e["model"], e["compress_job"],
                          dict(e["runs"]),
                          {suite: {(x["name"], x["subset"]): x for x in rows}
                           for suite, rows in e["metrics"].items()})
               for e in data["entries"]]
    teacher = next(e for e in entries if e.label == data["teacher"])
    return StudyJudgement(entries, teacher, list(data["problems"]), list(data["significance"]),
                          list(data["flips"]), list(data.get("gates", [])))


# -- reading and writing ------------------------------------------------------------------------
def load(home: Home, study: str) -> Cached | None:
    """The newest cached judgement of `study`, whatever its key (None: none readable)."""
    for path in sorted(_files_of(home, study), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("study") != study:
                continue
            return Cached(study, data["key"], from_json(data["judgement"]),
                          float(data.get("computed_at") or 0.0), float(data.get("seconds") or 0.0),
                          path)
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            continue            # a torn or foreign file: as if absent
    return None


def save(home: Home, study: str, key: str, judged, seconds: float = 0.0) -> Path:
    """Write the judgement atomically (0600) and remove this study's older files."""
    folder = cache_folder(home)
    target = folder / f"{safe_name(study)}-{key}.json"
    text = json.dumps({"format": CACHE_FORMAT, "study": study, "key": key,
                       "computed_at": time.time(), "seconds": seconds,
                       "judgement": to_json(judged)}, default=_plain)
    fd, partial = tempfile.mkstemp(prefix=".partial-", suffix=".json", dir=folder)
    try:
        os.fchmod(fd, OWNER_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    for old in _files_of(home, study):
        if old != target:
            try:
                old.unlink()
            except OSError:
                pass
    return target


def judge(store: Store, name: str, settings=None,
          progress: Callable[[dict], None] | None = None) -> tuple[Any, str, float]:
    """Judge study `name` now and cache the result; returns (judgement, key, seconds).
    `progress` gets `{"total": N}`, then `{"done": k, "total": N}` after each model, then
    `{"deciding": True}` before the multiple-comparison adjustment."""
    from engine import report  # on use: numpy, rich
    settings = settings or load_settings(store.home.root)
    record = study_record(store, name)
    key = key_of(dependencies(store, record, settings))
    say = progress or (lambda _: None)
    total = comparisons(record["plan"])
    say({"total": total})
    counted = {"done": 0}
    base = report.Judge

    class Counting(base):               # type: ignore[misc, valid-type]
        """The report's Judge, telling after each model how far it has got."""

        def compare_models(self, teacher, entry, value_of) -> None:
            super().compare_models(teacher, entry, value_of)
            counted["done"] += len(set(teacher.runs) & set(entry.runs))
            say({"done": min(counted["done"], total), "total": total})

        def decide(self):
            say({"deciding": True})
            return super().decide()

    started = time.perf_counter()
    if progress is None:
        judged = report.judge_study(store, record, settings)
    else:
        # judge_study looks its Judge up in its module: counted there while this call runs
        # (progress is asked for by the child process, which judges nothing else meanwhile)
        report.Judge = Counting
        try:
            judged = report.judge_study(store, record, settings)
        finally:
            report.Judge = base
    seconds = time.perf_counter() - started
    save(store.home, name, key, judged, seconds)
    return judged, key, seconds


# -- the child process a view starts ------------------------------------------------------------
def command(home: Home, study: str) -> list[str]:
    """The child that judges `study` and caches the result; its stdout carries the progress
    as JSON lines, its exit status 0 means saved (2: a user error, on stderr)."""
    return [sys.executable, "-m", "engine.judgement_cache", str(home.root), study]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m engine.judgement_cache HOME STUDY", file=sys.stderr)
        return 2
    home = Home.resolve(args[0])

    def say(message: dict) -> None:
        print(json.dumps(message), flush=True)
    store = Store(home)
    try:
        _, key, seconds = judge(store, args[1], progress=say)
    except UserError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        store.close()
    path = home.cache_dir / "judgements" / f"{safe_name(args[1])}-{key}.json"
    say({"saved": str(path), "key": key, "seconds": round(seconds, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
