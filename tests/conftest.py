from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.tinymodels import build_gpt2, build_llama

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real evaluation data not found at {path} (../shared/data is absent)")
    return path


@pytest.fixture(autouse=True)
def compfair_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty compfair home."""
    home = tmp_path / "home"
    monkeypatch.setenv("COMPFAIR_HOME", str(home))
    return home


@pytest.fixture
def home(compfair_home):
    from engine.paths import Home
    return Home.resolve(compfair_home)


@pytest.fixture
def store(home):
    from engine.store import Store
    s = Store(home)
    yield s
    s.close()


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return build_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models gain nothing from threads, and with worker subprocesses beside the test
    process, two OpenMP threads each oversubscribe 2 cores (measured: the compression tests
    took 215 s instead of 32 s)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO, logger="engine")


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC for the test (snapshots show times), restored after it."""
    import time
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
