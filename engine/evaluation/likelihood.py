"""Log-likelihoods under a causal LM: whole sentences (CrowS-Pairs) and a long text in strided
windows (perplexity).

Both condition the first real token on a start token (the tokenizer's BOS, else its EOS, as
GPT-2 uses `<|endoftext|>`), so every token of the text is scored whatever the tokenizer."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from engine.devices import free_device_memory, is_out_of_memory

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def start_token(tokenizer) -> int:
    for value in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id):
        if value is not None:
            return int(value)
    raise ValueError("the tokenizer has no BOS, EOS or pad token to start a text with")


def max_positions(model) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def map_batches(items: Sequence[T], batch_size: int, fn: Callable[[Sequence[T]], list[R]],
                device: torch.device) -> list[R]:
    """fn over consecutive batches; a batch that runs out of memory is split in halves (down to
    one item, which then fails)."""
    results: list[R] = []
    pending = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    while pending:
        chunk = pending.pop(0)
        try:
            results.extend(fn(chunk))
            continue
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            if not is_out_of_memory(exc) or len(chunk) == 1:
                raise
        # outside the except block: the failed batch's tensors are released by now
        free_device_memory(device)
        half = (len(chunk) + 1) // 2
        log.warning("out of memory at batch %d; splitting", len(chunk))
        pending[:0] = [chunk[:half], chunk[half:]]
    return results


def _token_log_probs(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) for t >= 1, shape (batch, len - 1), in float32."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :].float()
    return torch.log_softmax(logits, dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)


@torch.inference_mode()
def sentence_log_likelihoods(model, tokenizer, sentences: Sequence[str], device: torch.device,
                             batch_size: int = 16) -> np.ndarray:
    """Sum over each sentence's tokens of log p(token | start token, previous tokens), in nats.
    Sentences are right-padded in batches (padding is masked and not scored)."""
    start = start_token(tokenizer)
    limit = max_positions(model)
    encoded = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    sequences = [[start] + list(ids) for ids in encoded]
    if limit is not None:
        sequences = [seq[:limit] for seq in sequences]

    def run(chunk: Sequence[list[int]]) -> list[float]:
        width = max(len(seq) for seq in chunk)
        ids = torch.full((len(chunk), width), start, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, seq in enumerate(chunk):
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
        ids, mask = ids.to(device), mask.to(device)
        log_probs = _token_log_probs(model, ids, mask) * mask[:, 1:]
        return log_probs.sum(dim=1).double().cpu().tolist()

    return np.asarray(map_batches(sequences, batch_size, run, device), dtype=float)


@dataclass(frozen=True)
class Window:
    """One strided window: tokens [begin, end) are fed; tokens [score_from, end) are scored."""

    index: int
    begin: int
    end: int
    score_from: int


def plan_windows(n_tokens: int, context_length: int, stride: int) -> list[Window]:
    """The HF perplexity recipe's windows: starts every `stride` tokens, each `context_length`
    long, each scoring only the tokens the previous window did not, so every token after the
    start token is scored exactly once, with at least context_length - stride tokens of
    context (except in the first window)."""
    windows: list[Window] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context_length, n_tokens)
        score_from = max(prev_end, begin + 1)     # position 0 has no context inside the window
        if end > score_from:
            windows.append(Window(len(windows), begin, end, score_from))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def text_token_ids(tokenizer, text: str) -> list[int]:
    """The start token followed by the text's tokens."""
    return [start_token(tokenizer)] + list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


@torch.inference_mode()
def window_nlls(model, token_ids: Sequence[int], windows: Sequence[Window], device: torch.device,
                batch_size: int = 4) -> Iterator[tuple[Window, float, int]]:
    """(window, summed NLL in nats, tokens scored) per window, computed a batch at a time."""
    all_ids = torch.tensor(token_ids, dtype=torch.long)
    for start in range(0, len(windows), batch_size):
        chunk = list(windows[start:start + batch_size])

        def run(part: Sequence[Window]) -> list[tuple[Window, float, int]]:
            ids, mask, scored = _window_inputs(all_ids, part)
            log_probs = _token_log_probs(model, ids.to(device), mask.to(device)).cpu()
            nll = -(log_probs.double() * scored).sum(dim=1)
            return [(w, float(nll[r]), int(scored[r].sum())) for r, w in enumerate(part)]

        yield from map_batches(chunk, len(chunk), run, device)


WIDTH_BUCKET = 32


def _bucket(length: int) -> int:
    """The padded width of a sequence of `length` tokens (a multiple of WIDTH_BUCKET)."""
    return -(-length // WIDTH_BUCKET) * WIDTH_BUCKET


@torch.inference_mode()
def continuation_nlls(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                      device: torch.device, batch_size: int = 16) -> list[tuple[float | None, int]]:
    """(mean NLL per token in nats, token count) of each continuation given its prompt:
    -1/T * sum_t log p(c_t | start token, prompt tokens, c_<t), where the prompt and the
    continuation are tokenized separately with `tokenizer` (no special tokens) and joined,
    so the T scored tokens are exactly the continuation's. Rows are right-padded to a width
    bucket of their own length, so a row's result does not depend on its batch. An empty continuation (T = 0) gives
    (None, 0). Sequences longer than the model's positions keep the continuation and drop the
    prompt's oldest tokens. Right-padded batches, padding masked and not scored."""
    start = start_token(tokenizer)
    limit = max_positions(model)
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    cont_ids = tokenizer(list(continuations), add_special_tokens=False)["input_ids"]
    jobs = []
    for p_ids, c_ids in zip(prompt_ids, cont_ids):
        seq = [start] + list(p_ids) + list(c_ids)
        if limit is not None and len(seq) > limit:
            seq = [start] + seq[len(seq) - limit + 1:]
        jobs.append((seq, min(len(c_ids), len(seq) - 1)))

    def run(chunk: Sequence[tuple[list[int], int]]) -> list[tuple[float | None, int]]:
        # every row padded to its width bucket, whatever else is in the batch: each row's
        # result then does not depend on how rows were batched (out of memory, resumes)
        width = _bucket(max(len(seq) for seq, _ in chunk))
        ids = torch.full((len(chunk), width), start, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (seq, _) in enumerate(chunk):
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        logp = _token_log_probs(model, ids.to(device), mask.to(device)).cpu()
        out: list[tuple[float | None, int]] = []
        for i, (seq, n) in enumerate(chunk):
            if n == 0:
                out.append((None, 0))
                continue
            scored = logp[i, len(seq) - 1 - n:len(seq) - 1]       # the continuation's tokens
            out.append((float(-scored.double().mean()), n))
        return out

    # batches hold rows of one width bucket only, in a fixed order
    order = sorted(range(len(jobs)), key=lambda i: (_bucket(len(jobs[i][0])), i))
    results = []
    for _, group in itertools.groupby(order, key=lambda i: _bucket(len(jobs[i][0]))):
        members = list(group)
        results.extend(map_batches([jobs[i] for i in members], batch_size, run, device))
    out: list[tuple[float | None, int]] = [(None, 0)] * len(jobs)
    for position, index in enumerate(order):
        out[index] = results[position]
    return out


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


def _window_inputs(all_ids: torch.Tensor, part: Sequence[Window]):
    """(ids, attention mask, scored) of right-padded windows; scored[r, j] says whether the
    prediction at column j (of token begin + j + 1) is scored, as in `window_nlls`."""
    width = max(w.end - w.begin for w in part)
    ids = torch.zeros((len(part), width), dtype=torch.long)
    mask = torch.zeros((len(part), width), dtype=torch.long)
    scored = torch.zeros((len(part), width - 1), dtype=torch.bool)
    for r, w in enumerate(part):
        ids[r, :w.end - w.begin] = all_ids[w.begin:w.end]
        mask[r, :w.end - w.begin] = 1
        scored[r, w.score_from - w.begin - 1:w.end - w.begin - 1] = True
    return ids, mask, scored


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
            ids, mask, scored = _window_inputs(all_ids, part)
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
