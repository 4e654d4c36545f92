"""compfair's results in the formats of the tools around it.

`records`: each model's latest finished run per suite, with its metrics (the one read of the
store every exporter shares); `lm_eval_format`: `compfair export --format lm-eval`, results
JSON in lm-evaluation-harness's schema; `model_card`: `compfair card`, a Hugging Face model
card; `prefetch`: `compfair prefetch`, what a study needs from the hub; `tracking`: `--log
mlflow` / `--log wandb`, a finished job's spec and metrics in an experiment tracker; `cli`: the
commands. Nothing here imports textual, and the optional libraries (lm-eval, mlflow, wandb,
huggingface_hub) are imported only by the code that needs them."""
