"""Log-likelihoods under a causal LM: whole sentences (CrowS-Pairs) and a long text in strided
windows (perplexity).

Both condition the first real token on a start token (the tokenizer's BOS, else its EOS, as
GPT-2 uses `<|endoftext|>`), so every token of the text is scored whatever the tokenizer.

Continuation NLLs (the fluency pass) are in `continuation_likelihood`; a model's divergence
from a baseline per window is in `window_divergence`."""

from __future__ import annotations

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
            ids, mask, scored = window_inputs(all_ids, part)
            log_probs = _token_log_probs(model, ids.to(device), mask.to(device)).cpu()
            nll = -(log_probs.double() * scored).sum(dim=1)
            return [(w, float(nll[r]), int(scored[r].sum())) for r, w in enumerate(part)]

        yield from map_batches(chunk, len(chunk), run, device)


def window_inputs(all_ids: torch.Tensor, part: Sequence[Window]):
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
