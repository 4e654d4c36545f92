"""Model references resolve and load through one path; bad ones fail with one line."""

import shutil
import time

import pytest

from engine import queue
from engine.model_loader import BUILTIN_SOURCE, ModelCache, ModelError, resolve, smollm2_path
from engine.specs import PruneSpec
from tests.tinymodels import build_small_gguf


def needs_offline_model() -> None:
    try:
        smollm2_path()
    except ModelError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    needs_offline_model()
    return build_small_gguf(tmp_path_factory.mktemp("gguf") / "smol-2layer.gguf")


def test_gguf_is_dequantised_once_and_then_reused(home, store, small_gguf):
    first_start = time.perf_counter()
    loaded = ModelCache(home).load(str(small_gguf), store)
    first = time.perf_counter() - first_start
    cached = list((home.cache_dir / "gguf").iterdir())
    assert len(cached) == 1 and any(cached[0].glob("*.safetensors"))
    stamp = {p.name: p.stat().st_mtime_ns for p in cached[0].iterdir()}
    second_start = time.perf_counter()
    again = ModelCache(home).load(str(small_gguf), store)  # a new worker: no in-memory cache
    second = time.perf_counter() - second_start
    assert {p.name: p.stat().st_mtime_ns for p in cached[0].iterdir()} == stamp  # not rewritten
    assert second < first
    assert again.model_id == loaded.model_id
    row = store.model(loaded.model_id)
    assert (row["origin"], row["architecture"], row["n_layers"]) == ("gguf", "LlamaForCausalLM", 2)
    assert row["n_params"] == sum(p.numel() for p in loaded.model.parameters())
    text = loaded.tokenizer.decode(loaded.tokenizer("The cat sat").input_ids)
    assert "cat" in text


def test_the_builtin_alias_has_a_stable_registry_key(store):
    needs_offline_model()
    source = resolve("smollm2", store)
    assert (source.source, source.origin) == (BUILTIN_SOURCE, "builtin")
    assert source.gguf_file.endswith(".gguf")


def test_local_folder_round_trip_and_model_and_job_references(home, store, tiny_gpt2):
    cache = ModelCache(home)
    loaded = cache.load(str(tiny_gpt2), store)
    assert cache.load(str(tiny_gpt2), store) is loaded  # reused while the worker lives
    assert cache.load(f"model:{loaded.model_id}", store) is loaded
    job_id = queue.submit(store, PruneSpec(model=str(tiny_gpt2)))
    queue.finish(store, job_id, "done", result={"model_id": loaded.model_id})
    assert resolve(f"job:{job_id}", store).source == str(tiny_gpt2)
    fresh = cache.load(str(tiny_gpt2), store, fresh=True)
    assert fresh is not loaded and fresh.model is not loaded.model


@pytest.mark.parametrize("ref, message", [
    ("/no/such/folder", "does not exist"),
    ("model:999", "not in the registry"),
    ("job:999", "job 999 does not exist"),
    ("model:abc", "expected model:<number>"),
    ("a/b/c", "neither a hub id"),
    # not repo ids the hub accepts (they reached huggingface_hub's validator: a traceback)
    ("study:nope", "neither a hub id"),
    ("bad name!", "neither a hub id"),
    ("x--y", "neither a hub id"),
])
def test_bad_references_fail_with_one_line(store, ref, message):
    with pytest.raises(ModelError, match=message) as info:
        resolve(ref, store)
    assert "\n" not in str(info.value)


def test_folder_without_config_and_non_gguf_file(store, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path), store)
    with pytest.raises(ModelError, match="not a .gguf file"):
        resolve(str(tmp_path / "weights.bin"), store)


def test_truncated_safetensors_fail_cleanly(home, store, tiny_gpt2, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_gpt2, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(ModelError, match="cannot be loaded") as info:
        ModelCache(home).load(str(broken), store)
    assert "\n" not in str(info.value)


def test_uncached_hub_id_offline_says_how_to_make_it_available(home, store, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache") as info:
        ModelCache(home).load("compfair-test/does-not-exist", store)
    assert "huggingface-cli download" in str(info.value)
