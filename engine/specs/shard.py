"""Layer 3 (specs): the spec of one shard of a sharded eval job (run by engine.scale.shards).

A shard names the eval job it produces samples for (`parent`), which part it is (`index` of
`count`) and nothing else: the evaluation settings are the parent's own spec, read from the
queue, so a shard can never evaluate anything but its parent's items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.errors import SpecError
from engine.specs.base import INTERNAL_SPEC_TYPES, JobSpec

MAX_SHARDS = 1024


@dataclass(frozen=True)
class EvalShardSpec(JobSpec):
    """Items `index` of `count` equal contiguous ranges of the eval job `parent`, stored into
    that job's run. Queued by `submit eval --shards N`, never on its own."""

    kind: ClassVar[str] = "eval_shard"
    produces_model: ClassVar[bool] = False
    parent: int = 0
    index: int = 0
    count: int = 2

    def __post_init__(self) -> None:
        if not 2 <= self.count <= MAX_SHARDS:
            raise SpecError(f"count {self.count} (shards) must be in [2, {MAX_SHARDS}]", "count")
        if not 0 <= self.index < self.count:
            raise SpecError(f"index {self.index} must be in [0, {self.count - 1}]", "index")
        if self.parent < 1:
            raise SpecError(f"parent {self.parent} must be a job id", "parent")

    def title(self) -> str:
        return f"shard {self.index + 1}/{self.count} of job {self.parent}"

    def summary(self) -> str:
        return f"produce shard {self.index + 1} of {self.count} of eval job {self.parent}"


INTERNAL_SPEC_TYPES.register(EvalShardSpec)
