"""Model paths relative to the home (issue 19, finding 8): a model saved inside the home is
stored as `models/...`, and a copied home resolves `model:ID` to its own copy, not the
original's; a row written with an absolute path before this is found in the copy too."""

from __future__ import annotations

import shutil

from engine.model_refs import resolve
from engine.paths import Home
from engine.store import Store


def _fake_model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    return folder


def test_copied_home_loads_its_own_models(tmp_path):
    original = Home.resolve(tmp_path / "original")
    inside = _fake_model(original.models_dir / "student")
    outside = _fake_model(tmp_path / "elsewhere" / "teacher")
    store = Store(original)
    student = store.upsert_model({"name": "student", "source": str(inside), "origin": "derived",
                                  "path": str(inside)})
    teacher = store.upsert_model({"name": "teacher", "source": str(outside), "origin": "local",
                                  "path": str(outside)})
    with store.conn:   # a row from before relative paths: absolute, into the original home
        legacy = store.db["models"].insert({"name": "legacy", "source": "legacy-src",
                                            "origin": "derived", "path": str(inside)}).last_pk
    raw = {r["id"]: r["path"] for r in store.query("SELECT id, path FROM models")}
    assert raw[student] == "models/student" and raw[teacher] == str(outside)
    assert store.model(student)["path"] == str(inside)
    store.close()

    shutil.copytree(original.root, tmp_path / "copy")
    shutil.rmtree(original.root)        # the original is gone: nothing may load from it
    copy = Home.resolve(tmp_path / "copy")
    store = Store(copy)
    for model_id in (student, legacy):
        source = resolve(f"model:{model_id}", store)
        assert source.load_path == str(copy.models_dir / "student")
    assert resolve(f"model:{teacher}", store).load_path == str(outside)
    store.close()
