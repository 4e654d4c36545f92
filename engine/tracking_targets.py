"""Where finished jobs are logged to: the `--log` / `[tracking] log` / COMPFAIR_LOG syntax
(`mlflow[=URI]`, `wandb[=PROJECT]`), parsed without the trackers themselves, so the settings
file can be checked at the bottom layer (engine.interop.tracking does the logging)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from engine.errors import UserError

TRACKERS = ("mlflow", "wandb")     # engine.interop.tracking.BACKENDS, in this order


@dataclass(frozen=True)
class Target:
    """Where to log: `backend` (one of TRACKERS) and its `where` (MLflow URI, W&B project;
    None for the default)."""

    backend: str
    where: str | None = None

    @property
    def text(self) -> str:
        return self.backend + (f"={self.where}" if self.where else "")


def parse_target(text: str) -> Target:
    """`mlflow`, `mlflow=URI`, `wandb` or `wandb=PROJECT`; else a one-line UserError."""
    backend, _, where = text.strip().partition("=")
    if backend not in TRACKERS:
        raise UserError(f"--log {text!r}: unknown tracker {backend!r}; use "
                        + " or ".join(f"{b}[=...]" for b in TRACKERS))
    return Target(backend, where.strip() or None)


def parse_targets(texts: Sequence[str] | None) -> list[Target]:
    return [parse_target(t) for item in texts or () for t in item.split(",") if t.strip()]
