"""compfair engine: job specs, the SQLite store, the job queue and worker, model loading,
evaluation suites and compression methods. Never imports textual."""

__version__ = "0.1.0"
