"""Saving a derived model and recording it in the registry with its lineage.

The model is written to `<name>.partial` under the models folder and renamed into place only
when complete, so a half-written model never appears. It is then reloaded once (the same way
the registry loads it) and its logits compared with the in-memory model, so a model that would
not load back is a failed job, not a surprise later."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from engine.formats.head_pruned import has_head_layout, load_head_pruned
from engine.formats.packed import is_quantized_folder, load_quantized
from engine.context import JobContext
from engine.errors import JobFailed
from engine.model_paths import to_loadable, to_stored
from engine.paths import OWNER_FOLDER_MODE, owner_only_tree
from engine.model_loader import ModelSource, measure_latency, register
from engine.store import loads

log = logging.getLogger(__name__)


PRODUCT_EVENT = "product_folder"     # events.kind: the folder a job chose for its model
MAX_SUFFIX = 1000


def model_folder(ctx: JobContext, name: str) -> Path:
    """The folder for this job's model under the models folder: `name`, or `name-2`,
    `name-3`, ... when `name` is taken. A product never writes over anything it did not
    create: a folder (or file) already there, registered or not (a base model copied into
    `models/`, a user's own folder), a registered model's path, or another save's `.partial`
    leftovers make the name taken. The choice is recorded as a `product_folder` event of the
    job before anything is written, so a job that resumes (after a kill between saving and
    registering, or a take-over) writes into its own folder again, never into a new one."""
    own = _recorded_folder(ctx)
    if own is not None and _usable(ctx, own, recorded=True):
        return own
    first = ctx.home.inside(ctx.home.models_dir, name)
    for n in range(1, MAX_SUFFIX + 1):
        candidate = first if n == 1 else ctx.home.inside(ctx.home.models_dir, f"{first.name}-{n}")
        if _usable(ctx, candidate, recorded=False):
            if candidate != first:
                ctx.log(f"models/{first.name} already exists and is not this job's: saving the "
                        f"model as {candidate.name}", level="warning")
            ctx.store.add_event(ctx.job_id, f"model folder {candidate.name}", kind=PRODUCT_EVENT,
                                data={"path": to_stored(str(candidate), ctx.home.root)})
            return candidate
    raise JobFailed(f"models/{first.name} and {MAX_SUFFIX - 1} numbered variants all exist; "
                    "give the job another name")


def _recorded_folder(ctx: JobContext) -> Path | None:
    """The folder this job chose before (its latest `product_folder` event), or None."""
    row = ctx.store.one("SELECT data FROM events WHERE job_id = ? AND kind = ? ORDER BY id DESC "
                        "LIMIT 1", (ctx.job_id, PRODUCT_EVENT))
    path = (loads(row["data"], {}) or {}).get("path") if row else None
    return Path(to_loadable(path, ctx.home.root)) if path else None


def _usable(ctx: JobContext, target: Path, *, recorded: bool) -> bool:
    """Whether this job may write `target`: it is registered to this job, or no other
    model is registered there and (unless this job recorded it as its own) nothing is on
    disk under its name or its save's temporary names."""
    prefix = str(target)
    rows = ctx.store.query("SELECT job_id, source, path FROM models WHERE source = ? OR source "
                           "LIKE ? ESCAPE '\\' OR path = ?",
                           (prefix, _like_prefix(prefix + os.sep), to_stored(prefix, ctx.home.root)))
    if any(r["job_id"] != ctx.job_id for r in rows):
        return False                        # another model (a base model, another job's) is there
    if rows or recorded:
        return True                         # this job's own folder (registered or recorded)
    return not any(p.exists() or p.is_symlink() for p in (
        target, target.with_name(target.name + ".partial"),
        target.with_name(target.name + ".replaced.partial")))


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def save_model(model: nn.Module, tokenizer, target: Path,
               before_rename: Callable[[], None] | None = None) -> Path:
    """save_pretrained + tokenizer into `target.partial`, then rename to `target`.

    On any failure the partial folder is removed and an earlier `target` is left as it was."""
    def write(partial: Path) -> None:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    return write_atomically(target, write, before_rename)


def write_atomically(target: Path, write, before_rename: Callable[[], None] | None = None) -> Path:
    """Call `write(folder)` on a fresh `target.partial` folder, then rename it to `target`
    (moving an earlier `target` aside until the new one is in place). `before_rename` runs
    just before the rename and may raise to leave `target` untouched (a worker's job code
    passes `ctx.ensure_lease`: a worker that lost its job never replaces the folder)."""
    partial = target.with_name(target.name + ".partial")
    replaced = target.with_name(target.name + ".replaced.partial")
    # Leftovers of a save killed half-way (SIGKILL leaves no chance to clean up); an earlier
    # model left moved aside by a kill mid-swap goes back into place.
    _remove(partial)
    if replaced.is_dir() and not target.exists():
        os.replace(replaced, target)
    _remove(replaced)
    try:
        partial.mkdir(parents=True, mode=OWNER_FOLDER_MODE)
        write(partial)
        owner_only_tree(partial)       # 0700 folders, 0600 files, whatever the umask
        if before_rename is not None:
            before_rename()
        if target.exists():
            # A folder cannot be renamed over a non-empty one: move the earlier model aside
            # and put it back if the new one cannot take its place.
            os.replace(target, replaced)
            try:
                os.replace(partial, target)
            except BaseException:
                os.replace(replaced, target)
                raise
            _remove(replaced)
        else:
            os.replace(partial, target)
    except BaseException:
        _remove(partial)
        raise
    return target


def _remove(path: Path) -> None:
    """Delete a file or folder if it is there (best effort: a cleanup must not mask an error)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def load_saved(path: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a saved derived model as the registry does (head-pruned layouts and packed
    quantized weights included)."""
    if has_head_layout(path):
        return load_head_pruned(path, dtype)
    if is_quantized_folder(path):
        return load_quantized(path, dtype)
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)


HALF_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def parent_storage_dtype(ctx: JobContext, parent_id: int | None) -> torch.dtype | None:
    """The half precision the parent model is stored in (its config.json's dtype, or float16
    for a GGUF file below 32 bits: `gguf_storage_dtype`), or None for a float32 parent or one
    whose files say nothing: derived models are saved in their parent's precision, never
    silently widened to float32."""
    import json
    row = ctx.store.model(parent_id) if parent_id else None
    if not row or not row.get("path"):
        return None
    gguf_file = (loads(row.get("extra"), {}) or {}).get("gguf_file")
    if gguf_file:
        return gguf_storage_dtype(Path(row["path"]) / gguf_file)
    config = Path(row["path"]) / "config.json"
    if not config.is_file():
        try:
            from transformers.utils import cached_file
            found = cached_file(row["path"], "config.json", local_files_only=True)
            config = Path(found) if found else config
        except Exception:  # noqa: BLE001 - not a hub id, or not cached: no stored dtype known
            return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return HALF_DTYPES.get(str(data.get("dtype") or data.get("torch_dtype") or ""))


GGUF_ALL_F32 = 0          # llama.cpp's LLAMA_FTYPE_ALL_F32 in `general.file_type`


def gguf_storage_dtype(path: Path) -> torch.dtype | None:
    """float16 for a GGUF file stored in 16 bits or fewer (F16, Q8_0, Q4_x, ...): its
    dequantised values come from float16 scales, which float16 holds closely, while float32
    would make a derived model four to five times the size of the file it came from; None
    for an all-F32 file or one that cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    file_type = _gguf_file_type(str(path), stat.st_size, stat.st_mtime_ns)
    return None if file_type in (None, GGUF_ALL_F32) else torch.float16


@functools.lru_cache(maxsize=16)
def _gguf_file_type(path: str, size: int, mtime_ns: int) -> int | None:
    """`general.file_type` of a GGUF file (read once per file version: the reader maps every
    tensor, seconds for a 100 MB file)."""
    try:
        import gguf
        field = gguf.GGUFReader(path).fields.get("general.file_type")
        return int(field.parts[-1][0]) if field is not None else None
    except Exception:  # noqa: BLE001 - unreadable: no stored precision known
        return None


@torch.no_grad()
def verify_round_trip(model: nn.Module, path: Path, device: torch.device) -> None:
    """Reload `path` and check it computes the same logits as `model` (JobFailed if not)."""
    dtype = next(model.parameters()).dtype
    try:
        reloaded = load_saved(path, dtype).to(device).eval()
    except Exception as exc:  # noqa: BLE001 - any load failure fails the job with its reason
        raise JobFailed(f"the saved model at {path} does not load back: "
                        f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from exc
    ids = torch.arange(1, 17, device=device)[None, :] % model.config.vocab_size
    was_training = model.training
    model.eval()
    expected = model(input_ids=ids, use_cache=False).logits.float()
    got = reloaded(input_ids=ids, use_cache=False).logits.float()
    model.train(was_training)
    if not torch.allclose(expected, got, atol=1e-3, rtol=1e-3):
        raise JobFailed(f"the saved model at {path} computes different logits after reloading "
                        f"(max difference {float((expected - got).abs().max()):.3g})")


def save_and_register(ctx: JobContext, model: nn.Module, tokenizer, name: str, *,
                      device: torch.device, parent_id: int | None, method: str,
                      method_params: dict[str, Any], sparsity: dict | None = None,
                      extra: dict[str, Any] | None = None) -> tuple[int, Path]:
    """Save, verify, measure latency and register; returns (model id, folder)."""
    ctx.ensure_lease()                # a worker that lost the job writes no folder (fencing)
    model.eval()
    half = parent_storage_dtype(ctx, parent_id)
    working = next(model.parameters()).dtype
    if half is not None:                          # stored like its parent, not widened to fp32
        # Only the parameters are cast, and back after saving (exactly: they are rounded by
        # then). Buffers such as rotary frequencies stay as the model computes them, so the
        # round-trip check compares like with like, and latency is measured in the precision
        # evaluations load the model in.
        _cast_parameters(model, half)
        extra = {**(extra or {}), "saved_dtype": str(half).replace("torch.", "")}
    try:
        target = save_model(model, tokenizer, model_folder(ctx, name), ctx.ensure_lease)
    finally:
        _cast_parameters(model, working)
    verify_round_trip(model, target, device)
    source = ModelSource(source=str(target), origin="derived", load_path=str(target))
    model_id = register_derived(ctx, model, tokenizer, source, device=device, parent_id=parent_id,
                                method=method, method_params=method_params, sparsity=sparsity,
                                extra=extra)
    return model_id, target


def _cast_parameters(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast every floating-point parameter (not the buffers) to `dtype`, in place."""
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


def register_derived(ctx: JobContext, model: nn.Module, tokenizer, source: ModelSource, *,
                     device: torch.device, parent_id: int | None, method: str,
                     method_params: dict[str, Any], sparsity: dict | None = None,
                     extra: dict[str, Any] | None = None) -> int:
    """Measure latency and register a saved derived model with its lineage; its id."""
    target = Path(source.load_path)
    latency = measure_latency(model, tokenizer, device)
    ctx.ensure_lease()     # the registry's insert is fenced too (engine.fencing's triggers)
    fields: dict[str, Any] = {"name": target.name, "parent_id": parent_id, "method": method,
                              "method_params": method_params, "job_id": ctx.job_id,
                              "latency_ms": latency}
    if sparsity is not None:
        fields["sparsity"] = sparsity
    if extra:
        fields["extra"] = extra
    model_id = register(ctx.store, source, model, **fields)
    ctx.log(f"saved model {target.name} (registry id {model_id}, {latency:.1f} ms/token)",
            model_id=model_id, path=str(target))
    return model_id
