"""Atomic training checkpoints in a job's checkpoint folder.

A checkpoint is written to a temporary file, flushed to disk and renamed over the previous one,
so a worker killed mid-write leaves the last complete checkpoint in place. Files are read with
`torch.load(weights_only=True)`: only tensors and plain containers, never pickled code."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
DATA_FILE = "data.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` to `path` via a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def safe_load(path: Path) -> Any | None:
    """The object at `path`, or None (missing or unreadable, which is logged)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint means start afresh
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None


def rng_state() -> dict[str, Any]:
    """Python and torch RNG states (CUDA too when present), as checkpointable values."""
    state: dict[str, Any] = {"python": list(_flatten_python_state(random.getstate())),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _flatten_python_state(state: tuple) -> tuple:
    version, internal, gauss = state
    return version, list(internal), gauss


def save_training_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_save(state, folder / STATE_FILE)


def load_training_state(folder: Path) -> dict[str, Any] | None:
    return safe_load(folder / STATE_FILE)
