"""The result of a finished job, as stored in `jobs.result`.

Job kinds return different figures, but every reader wants one of two things: the run an eval
job recorded (`run_id`) or the model a job produced or evaluated (`model_id`). `JobResult`
types those and keeps the rest as `extras`; it is read from the store through `from_json` /
`from_row` (tolerant of old and partial rows) and turned into JSON only at the store boundary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

_TYPED = ("run_id", "model_id", "path", "method")


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class JobResult:
    """A job's result. `run_id`: the run an eval job recorded; `model_id`: the model a
    compression job registered (or the model an eval job evaluated); `path`: a produced model's
    folder; `method`: the compression method; `extras`: every other stored figure by key."""

    run_id: int | None = None
    model_id: int | None = None
    path: str | None = None
    method: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """A typed field or an extra by its stored key (None-valued typed fields give `default`)."""
        if key in _TYPED:
            value = getattr(self, key)
            return default if value is None else value
        return self.extras.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The stored form; typed fields that are None are left out, as jobs never wrote them."""
        typed = {k: getattr(self, k) for k in _TYPED if getattr(self, k) is not None}
        return {**self.extras, **typed}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "JobResult":
        data = data if isinstance(data, Mapping) else {}
        path, method = data.get("path"), data.get("method")
        return cls(run_id=_int_or_none(data.get("run_id")), model_id=_int_or_none(data.get("model_id")),
                   path=str(path) if path is not None else None,
                   method=str(method) if method is not None else None,
                   extras={k: v for k, v in data.items() if k not in _TYPED})

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any] | None) -> "JobResult":
        """From `jobs.result` (JSON text, an already decoded mapping, or nothing: an empty
        result, as for a job that has not finished)."""
        if isinstance(text, (str, bytes)):
            try:
                text = json.loads(text) if text.strip() else None
            except ValueError:
                text = None
        return cls.from_dict(text)

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | None) -> "JobResult":
        """From a `jobs` row (its `result` column)."""
        return cls.from_json((row or {}).get("result"))
