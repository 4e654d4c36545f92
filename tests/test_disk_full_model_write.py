"""Issue 31, 3: a model write that runs out of room is named as such.

numpy writes GGUF tensors with fwrite, and a short write reaches Python as "294912 requested and
80800 written" with no errno, so the failure classifier missed it: the job's reason read as an
internal OSError, and the worker went on to the next job although it would fail the same way.
Here a real `compfair worker --once` runs under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored:
the GGUF file in models/ reaches the limit while the store stays under it, as when only the
models folder is full): the GGUF quantization fails with a reason that says disk full, names
the file and how much was needed; the worker stops (exit 1) and leaves the next job queued;
with the limit gone a retry completes the job."""

from __future__ import annotations

import errno
import json
import re

from engine import api, queue
from engine.failures import failure_reason, is_no_room, stops_the_worker
from engine.specs import EvalSpec, QuantizeSpec
from tests.test_reliability_faults import run_inline
from tests.test_reliability_resources import checkpoint, run_limited_worker


def test_gguf_quantization_past_the_file_size_limit(home, store, tmp_path):
    from tests.tinymodels import build_llama
    model = build_llama(tmp_path / "wide-llama", n_layer=4, hidden=384, heads=4)
    weights = (model / "model.safetensors").stat().st_size          # float32: ~4x the Q8_0 file
    job_id = queue.submit(store, QuantizeSpec(model=str(model), method="gguf", gguf_type="q8_0"))
    after = queue.submit(store, EvalSpec(model=str(model), suite="crows_pairs", data="builtin",
                                         max_prompts=8, bootstrap_samples=100))
    size = checkpoint(home)
    limit = weights // 12
    assert size * 2 < limit, (size, limit)
    code, log = run_limited_worker(home, limit=limit)

    job = queue.job(store, job_id)
    assert job["status"] == "failed", (job["status"], job["error"], log[-2000:])
    reason = job["error"]
    assert "\n" not in reason and "requested and" not in reason, reason
    assert reason.startswith(f"disk full or file size limit reached while writing {home.models_dir}/"), reason
    assert re.search(r"\.partial/[^ ]+\.gguf \(a write of [\d,]+ bytes stored only [\d,]+: [\d,]+ more "
                     r"bytes were needed; the file had [\d,]+ bytes of the [\d,]+ it needs; the file "
                     r"size limit of this process is " + f"{limit:,}" + r" bytes; [\d,]+ bytes free on "
                     r"its file system\); free space and retry the job$", reason), reason
    # the worker stopped like on any full disk: the next job was not started
    assert code == 1 and "error: worker stopped: disk full" in log, log[-2000:]
    assert queue.job(store, after)["status"] == "queued"
    assert store.one("SELECT count(*) AS n FROM models WHERE job_id = ?", (job_id,))["n"] == 0
    assert not [p for p in home.models_dir.iterdir() if not p.name.endswith(".partial")]

    api.retry(store, job_id, start_worker=False)        # room again
    run_inline(home)
    done = queue.job(store, job_id)
    assert done["status"] == "done", done["error"]
    assert json.loads(done["result"])["path"].endswith(".gguf")
    assert queue.job(store, after)["status"] == "done"


def test_short_writes_and_enospc_name_the_file(tmp_path):
    target = tmp_path / "models" / "m.partial" / "model.safetensors"
    target.parent.mkdir(parents=True)

    def save_file(tensors, filename):             # as safetensors: a plain error, the path a local
        raise RuntimeError("No space left on device (os error 28)")
    try:
        save_file({}, str(target))
    except RuntimeError as exc:
        assert is_no_room(exc) and stops_the_worker(exc)
        reason = failure_reason(exc)
    assert reason.startswith(f"disk full or file size limit reached while writing {target} ("), reason
    assert "No space left on device (os error 28)" in reason and "bytes free on its file system" in reason

    enospc = OSError(errno.ENOSPC, "No space left on device", str(target))
    assert f"writing {target} (" in failure_reason(enospc)
    short = OSError("294912 requested and 80800 written")
    assert is_no_room(short) and stops_the_worker(short)
    assert "a write of 294,912 bytes stored only 80,800: 214,112 more bytes were needed" in failure_reason(short)
    assert not is_no_room(OSError("something else requested and written"))
