"""Layer 3 (specs): job specifications, frozen, typed, validated on construction, serialisable
to JSON. `base`: `JobSpec`, the shared checks and `spec_from_dict`; `eval`: `EvalSpec`;
`compression`: `DistillSpec`, `PruneSpec`, `QuantizeSpec`; `shard`: `EvalShardSpec`, the
internal kind of a sharded eval's shards. This package re-exports their public names.

Specs validate suites and compression methods with their declarations in `engine.catalog`
(layer 3) and import nothing above that layer.

Model references (`model`, `teacher`, `student`) are strings the registry resolves: a hub id
(`gpt2`), a local folder, a `.gguf` file, the alias `smollm2` (the offline default),
`model:ID` (a registry id) or `job:ID` (the model a compression job produced)."""

from engine.catalog.method_info import parse_n_m
from engine.errors import SpecError  # noqa: F401 - defined with the other errors; imported from here
from engine.spec_values import FieldAlias, check_ranges, coerce_value, field_range  # noqa: F401 - part of this module's API
from engine.specs.base import (DEVICES, DTYPES, HASH_OMITS_DEFAULT, INTERNAL_SPEC_TYPES, SPEC_TYPES,
                               JobSpec, spec_from_dict, spec_from_json)
from engine.specs.eval import BACKENDS, BOLD_DOMAINS, EvalSpec
from engine.specs.compression import MAX_PROCESSES, PRUNE_METHODS, DistillSpec, PruneSpec, QuantizeSpec

for _spec_type in (EvalSpec, DistillSpec, PruneSpec, QuantizeSpec):
    SPEC_TYPES.register(_spec_type)

from engine.specs.shard import MAX_SHARDS, EvalShardSpec  # noqa: E402 - registers the internal shard kind

__all__ = ["BACKENDS", "BOLD_DOMAINS", "DEVICES", "DTYPES", "HASH_OMITS_DEFAULT", "INTERNAL_SPEC_TYPES",
           "MAX_PROCESSES", "MAX_SHARDS", "PRUNE_METHODS", "SPEC_TYPES", "DistillSpec", "EvalShardSpec",
           "EvalSpec", "FieldAlias", "JobSpec", "PruneSpec", "QuantizeSpec", "SpecError", "check_ranges",
           "coerce_value", "field_range", "parse_n_m", "spec_from_dict", "spec_from_json"]
