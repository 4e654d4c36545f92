"""Continuation NLLs taken during sampling (issue 32): when the fluency pass's reference model
is the evaluated model itself, the sampler already computes every continuation token's
logits, so it records -log p(token) there (`Sampler(record_nll=True)`: float32 log-softmax of
the raw logits, temperature 1, no top-p: the quantity `continuation_nlls` computes) and the
rows are stored with their `continuation_nll` / `continuation_tokens` already set. The fluency
pass then scores only the rows still without one, as before.

A row takes its value from sampling only where the pass would score exactly the tokens that
were sampled, in the same context: the pass's own token sequence for the stored (prompt,
continuation text) (`continuation_likelihood.scored_sequence`: start token + prompt tokens +
the text's re-tokenisation, cut to the model's positions) must equal the sampler's
conditioning tokens followed by the sampled tokens. It differs where decoding and
re-tokenising the text does not give back the sampled ids (a merge the model did not sample,
special tokens skipped in decoding), where the prompt had trailing whitespace (the sampler
strips it) or was truncated, or where the tokenizer does not itself start a text with the
pass's start token (GPT-2-style tokenizers add no BOS, so the sampler conditions on the prompt
alone and the pass on start token + prompt): those rows go through `continuation_nlls`. So
the stored values equal the pass's up to floating-point rounding (batch shapes and kernels
differ: ~1e-6 nats per token).

`COMPFAIR_FLUENCY_FROM_SAMPLING=0` (or false/no/off) switches the shortcut off: every row is
scored by the pass."""

from __future__ import annotations

import logging
import math
import os
from typing import Sequence

from engine.devices import pick_device, pick_dtype
from engine.evaluation.continuation_likelihood import scored_sequence
from engine.evaluation.likelihood import max_positions, start_token
from engine.model_refs import resolve

log = logging.getLogger(__name__)

ENV = "COMPFAIR_FLUENCY_FROM_SAMPLING"


def enabled() -> bool:
    """Whether the shortcut may be used (`COMPFAIR_FLUENCY_FROM_SAMPLING`, default on)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def reference_is_self(ctx, spec, lm) -> bool:
    """Whether `generation.reference_model` would judge fluency with the evaluated model `lm`
    itself: no `reference_model` set and `lm` is the root of its lineage (the reference is
    then `lm`, the same loaded model), or `reference_model` names the same model source
    loaded on the same device in the same dtype (what the model cache keys a load by)."""
    if not spec.reference_model:
        lineage = ctx.store.lineage(lm.model_id) if lm.model_id else []
        root = lineage[-1] if lineage else None
        return root is None or root["id"] == lm.model_id
    try:
        source = resolve(spec.reference_model, ctx.store)
        device = pick_device(spec.device)
        dtype = pick_dtype(spec.dtype, device)
    except Exception:  # noqa: BLE001 - cannot tell: the pass scores everything
        return False
    return source.source == lm.source.source and device == lm.device and dtype == lm.dtype


class SampledFluency:
    """Turns a generated batch's recorded NLLs into stored (continuation_nll,
    continuation_tokens) for its rows that pass the check of the module docstring; `taken`
    and `left` count the rows given a value and the rows left to the pass."""

    def __init__(self, model, tokenizer):
        self.tokenizer = tokenizer
        self.start = start_token(tokenizer)
        self.limit = max_positions(model)
        self.taken = self.left = 0

    def values(self, prompts: Sequence[str], completions: Sequence[str], prompt_ids: Sequence[list[int]],
               token_ids: Sequence[list[int]], nll_sums: Sequence[float]) -> list[tuple[float | None, int] | None]:
        """Per row (mean NLL per token or None when empty, token count) equal to what
        `continuation_nlls` would store for (prompt, completion), or None where the row must
        go through it. Rows without recorded NLLs (another backend) are all None."""
        n_rows = len(completions)
        if not (len(nll_sums) == len(prompt_ids) == len(token_ids) == n_rows) or not n_rows:
            self.left += n_rows
            return [None] * n_rows
        distinct = list(dict.fromkeys(prompts))
        encoded = dict(zip(distinct, self.tokenizer(distinct, add_special_tokens=False)["input_ids"]))
        cont_ids = self.tokenizer(list(completions), add_special_tokens=False)["input_ids"]
        out: list[tuple[float | None, int] | None] = []
        for prompt, c_ids, p_ids, ids, total in zip(prompts, cont_ids, prompt_ids, token_ids, nll_sums):
            seq, n = scored_sequence(self.start, self.limit, encoded[prompt], c_ids)
            if n == 0:
                value = (None, 0)                            # the pass scores nothing either
            elif n == len(ids) and seq == list(p_ids) + list(ids) and math.isfinite(total):
                value = (total / n, n)
            else:
                value = None
            out.append(value)
        taken = sum(v is not None for v in out)
        self.taken += taken
        self.left += n_rows - taken
        return out
