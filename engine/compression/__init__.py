"""Model compression jobs: knowledge distillation, pruning and quantization (layer 6: they
write the model formats of `engine.formats`, which the loader reads back).

Modules, each with one job:

- `textdata`: training and calibration text (builtin, local file, hub data set, or sampled from
  the teacher) packed into fixed-length token blocks; `builtin_corpus` the offline text.
- `students` / `depth`: a student built from a teacher by keeping a subset of its layers (chosen
  by Block Influence), or an existing model checked for a shared vocabulary.
- `distill`: the distillation training loop (KL + CE + cosine), with checkpoints and resume;
  `distill_ddp` / `distill_rank` the same loop in N data-parallel processes; `checkpoint`
  atomic save/load of a training state.
- `prune`: unstructured magnitude / Wanda / N:M pruning and the sparsity check; `hessian`,
  `sparsegpt_solver`, `gptq_solver`: the second-order solvers of SparseGPT and GPTQ.
- `quant/`: applying a quantizer to a model's linear layers and GGUF export.
- `methods/`: the compression methods' implementations (their declarations are in
  `engine.catalog`); `run_prune` and `run_quantize` read everything method-specific from them.
- `model_writer`: saving a derived model atomically and registering it with its lineage.
- `records`: `SparsityRecord`, the typed form of a model's stored compression record.
- `runner` / `quant_runner`: the job entry points `run_distill`, `run_prune`, `run_quantize`.
"""
