#!/usr/bin/env bash
# Set up (with test tools) and run the default test suite: tiny models, no GPU, no network.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m slow` for the offline-model tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
