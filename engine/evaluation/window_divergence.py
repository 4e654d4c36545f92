"""How different a model's next-token distributions are from a baseline's over strided windows
of a text: per window the NLL, KL(P_baseline || P_model) and top-1 agreement (the perplexity
suite's divergence measures)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from engine.evaluation.likelihood import Window, window_inputs, map_batches


# -- how different from a baseline: KL divergence and top-1 agreement per window ---------------
# Rows of scored positions turned into float32 log-probabilities at a time: bounds the full-vocab
# float32 tensors to about 64 MB each whatever the vocabulary (151k tokens: 110 rows).
DIVERGENCE_CHUNK_ENTRIES = 1 << 24


@dataclass(frozen=True)
class WindowDivergence:
    """One window's sums over its scored tokens: NLL of the text under the model (nats), KL
    divergence KL(P_baseline || P_model) of the next-token distributions (nats) and the count of
    positions where both models' most likely next token is the same."""

    window: Window
    nll_sum: float
    n_tokens: int
    kl_sum: float
    top1_agree: int


def _scored_logits(model, ids: torch.Tensor, mask: torch.Tensor, scored: torch.Tensor,
                   device: torch.device) -> torch.Tensor:
    """The model's next-token logits at the scored positions only, (n scored, vocab), in the
    model's own dtype (no float32 copy of the unscored positions)."""
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1, :]
    return logits[scored.to(logits.device)]


def token_divergences(model_logits: torch.Tensor, base_logits: torch.Tensor,
                      targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per scored position (rows of the two (n, vocab) logit tensors, `targets` the true next
    tokens): NLL of the target under the model, KL(P_base || P_model) and whether both argmax
    tokens agree, as float64, float64 and bool tensors on the CPU. log_softmax in float32, a
    chunk of rows at a time. When the two output layers differ in width (padded vocabularies),
    KL and agreement are over the first min(width) tokens, each distribution renormalised there;
    the NLL always uses the model's full distribution (as `window_nlls` does)."""
    base_logits = base_logits.to(model_logits.device)
    targets = targets.to(model_logits.device)
    vocab = min(model_logits.shape[-1], base_logits.shape[-1])
    step = max(1, DIVERGENCE_CHUNK_ENTRIES // max(model_logits.shape[-1], base_logits.shape[-1]))
    nll, kl, agree = [], [], []
    for start in range(0, model_logits.shape[0], step):
        q_full = torch.log_softmax(model_logits[start:start + step].float(), dim=-1)
        nll.append(-q_full.gather(1, targets[start:start + step, None]).squeeze(1).double().cpu())
        log_q = q_full if q_full.shape[-1] == vocab else \
            torch.log_softmax(model_logits[start:start + step, :vocab].float(), dim=-1)
        del q_full
        log_p = torch.log_softmax(base_logits[start:start + step, :vocab].float(), dim=-1)
        p = log_p.exp()
        # p log(p / q), 0 where p underflows to 0 (0 log 0 = 0)
        terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros((), dtype=p.dtype, device=p.device))
        kl.append(terms.sum(dim=-1).double().cpu())
        agree.append((log_p.argmax(dim=-1) == log_q.argmax(dim=-1)).cpu())
        del p, terms, log_p, log_q
    if not nll:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty.clone(), torch.zeros(0, dtype=torch.bool)
    return torch.cat(nll), torch.cat(kl), torch.cat(agree)


@torch.inference_mode()
def window_divergences(model, baseline, token_ids: Sequence[int], windows: Sequence[Window],
                       device: torch.device, baseline_device: torch.device | None = None,
                       batch_size: int = 4) -> Iterator[WindowDivergence]:
    """Per window: the model's NLL (as `window_nlls`) and, on the same scored positions, the
    KL divergence from the baseline's next-token distribution to the model's and the top-1
    agreement (llama.cpp's `--kl-divergence` "Mean KLD" and "Same top p" before averaging).
    One forward pass of each model per batch of windows; the two models must share the
    tokenizer (`token_ids` means the same to both). A batch that runs out of memory is split."""
    all_ids = torch.tensor(token_ids, dtype=torch.long)
    baseline_device = baseline_device or device
    for start in range(0, len(windows), batch_size):
        chunk = list(windows[start:start + batch_size])

        def run(part: Sequence[Window]) -> list[WindowDivergence]:
            ids, mask, scored = window_inputs(all_ids, part)
            base = _scored_logits(baseline, ids, mask, scored, baseline_device)
            mine = _scored_logits(model, ids, mask, scored, device)
            targets = ids[:, 1:][scored]
            nll, kl, agree = token_divergences(mine, base, targets)
            del base, mine
            counts = [int(n) for n in scored.sum(dim=1)]
            out = []
            for w, n, nll_w, kl_w, agree_w in zip(part, counts, nll.split(counts), kl.split(counts),
                                                   agree.split(counts)):
                out.append(WindowDivergence(w, float(nll_w.sum()), n, float(kl_w.sum()),
                                            int(agree_w.sum())))
            return out

        yield from map_batches(chunk, len(chunk), run, device)
