"""Model compression jobs: knowledge distillation (`distill`) and pruning (`prune`).

Modules, each with one job:

- `arch`: where an architecture keeps its transformer blocks and linear layers (GPT-2 `Conv1D`
  vs `nn.Linear`), so nothing else hard-codes module paths.
- `textdata`: training and calibration text (builtin, local file, hub data set, or sampled from
  the teacher) packed into fixed-length token blocks.
- `students`: a student built from a teacher by keeping a subset of its layers, or an existing
  model checked for a shared vocabulary.
- `distill`: the distillation training loop (KL + CE + cosine), with checkpoints and resume.
- `distill_ddp` / `distill_rank`: the same loop in N data-parallel processes (`processes` N):
  the job's side (launch, relay, register) and one training process's side (DDP via Accelerate).
- `checkpoint`: atomic save/load of a training state.
- `prune`: unstructured magnitude / Wanda / N:M pruning and the sparsity check.
- `heads`: structured attention-head pruning (physical removal) and loading such models back.
- `output`: saving a derived model atomically and registering it with its lineage.
- `methods`: the compression method registry (one module per method: magnitude, wanda,
  heads); `run_prune` and `PruneSpec` read everything method-specific from it.
- `records`: `SparsityRecord`, the typed form of a model's stored compression record.
- `runner`: the job entry points `run_distill(ctx)` and `run_prune(ctx)`.
"""
