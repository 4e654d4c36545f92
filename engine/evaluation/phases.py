"""Where an eval job spends its time: per-phase wall and CPU seconds, stored in the run's
summary (`phase_seconds`, a JSON field: no schema change) and shown by `compfair logs JOB`,
`compfair show --job JOB` and `compfair bench`.

Phases, in order (they do not overlap, so they add up to the job's time inside `run_eval`):

- **setup**: data, scorer and model loaded, the run opened (a model the worker already holds
  costs nothing here);
- **generation**: producing the samples (sampling and storing for the generation suites, whose
  scoring thread runs *inside* this phase; the suite's likelihood pass for the others);
- **fluency**: every continuation's NLL under the reference model (generation suites);
- **metrics**: the metrics and their bootstrap intervals, from what is stored.

`scoring` (the scoring thread's busy seconds) is reported beside them, marked overlapped: it is
part of the generation phase's wall time, never added to the total. CPU seconds are this
process's (`time.process_time`: every thread, torch's included) during each phase."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

PHASES = ("setup", "generation", "fluency", "metrics")


@dataclass(frozen=True)
class JobPhases:
    """Wall seconds of each phase of one eval job (see the module docstring), the scoring
    thread's busy seconds (overlapped with generation, not added) and CPU seconds per phase."""

    setup: float
    generation: float
    fluency: float
    metrics: float
    scoring_overlapped: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        """The job's seconds inside the runner: the sum of the four phases."""
        return self.setup + self.generation + self.fluency + self.metrics

    @property
    def cpu_total(self) -> float | None:
        """CPU seconds of the four phases, or None where they were not recorded."""
        return sum(self.cpu[p] for p in PHASES) if all(p in self.cpu for p in PHASES) else None

    def to_dict(self) -> dict:
        """The stored form (`summary["phase_seconds"]`), rounded to milliseconds."""
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        out["cpu"] = {k: round(v, 3) for k, v in self.cpu.items()}
        out["total"] = round(self.total, 3)
        return out

    @classmethod
    def from_summary(cls, summary: dict | None) -> "JobPhases | None":
        """The phases stored in a run summary, or None for runs stored before they were."""
        stored = (summary or {}).get("phase_seconds")
        if not isinstance(stored, dict) or not all(p in stored for p in PHASES):
            return None
        return cls(*(float(stored[p]) for p in PHASES), stored.get("scoring_overlapped"),
                   dict(stored.get("cpu") or {}))

    def line(self) -> str:
        """One line for logs: `setup 1.2 s, generation 14.0 s (scoring 0.3 s overlapped), ...`."""
        parts = []
        for name in PHASES:
            text = f"{name} {getattr(self, name):.2f} s"
            if name == "generation" and self.scoring_overlapped is not None:
                text += f" (scoring {self.scoring_overlapped:.2f} s overlapped)"
            parts.append(text)
        cpu = self.cpu_total
        return ", ".join(parts) + f"; total {self.total:.2f} s" + (f", {cpu:.2f} CPU-s" if cpu is not None else "")

    def rows(self) -> list[list[str]]:
        """[phase, seconds, share of the job, CPU seconds] rows, the total last."""
        total = max(self.total, 1e-9)
        rows = [[name, f"{getattr(self, name):.2f}", f"{getattr(self, name) / total:.0%}",
                 f"{self.cpu[name]:.2f}" if name in self.cpu else ""] for name in PHASES]
        if self.scoring_overlapped is not None:
            rows.insert(2, ["  scoring (overlapped, inside generation)", f"{self.scoring_overlapped:.2f}",
                            "", ""])
        cpu = self.cpu_total
        rows.append(["total", f"{self.total:.2f}", "100%", f"{cpu:.2f}" if cpu is not None else ""])
        return rows


class PhaseClock:
    """Marks phase boundaries in the runner: `mark(name)` closes the phase that began at the
    previous mark (or at construction), recording its wall and CPU seconds."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def mark(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[name] = self.wall.get(name, 0.0) + wall - self._wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    def phases(self, extra: dict) -> JobPhases:
        """The job's phases; the suite's `extra` splits its part into generation and fluency
        (`quality_seconds`, timed inside the suite, with `quality_cpu_seconds`)."""
        work, work_cpu = self.wall.get("work", 0.0), self.cpu.get("work", 0.0)
        fluency = min(float(extra.get("quality_seconds") or 0.0), work)
        fluency_cpu = min(float(extra.get("quality_cpu_seconds") or 0.0), work_cpu)
        cpu = {"setup": self.cpu.get("setup", 0.0), "generation": work_cpu - fluency_cpu,
               "fluency": fluency_cpu, "metrics": self.cpu.get("metrics", 0.0)}
        wall = (self.wall.get("setup", 0.0), work - fluency, fluency, self.wall.get("metrics", 0.0))
        # rounded as stored, so the log line and the stored record agree to the digit
        return JobPhases(*(round(w, 3) for w in wall), extra.get("scoring_seconds"),
                         {k: round(v, 3) for k, v in cpu.items()})
