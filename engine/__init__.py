"""compfair engine: job specs, the SQLite store, the job queue and worker, model loading,
evaluation suites and compression methods. Never imports textual."""

import os

# OpenMP threads that spin while waiting steal the CPU from each other (and from the scoring
# thread) on small machines: measured 5-7x slower generation on 2 busy cores. Must be set
# before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Jobs report progress through the store; library progress bars would only flood the logs.
os.environ.setdefault("TQDM_DISABLE", "1")

__version__ = "0.1.0"
