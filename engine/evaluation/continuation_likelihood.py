"""Continuation NLLs (the fluency pass of the generation suites): the mean NLL per token of each
sampled continuation given its prompt, each distinct prompt prefilled once and its key/value
cache shared by its rows, the output head applied only where a token is scored."""

from __future__ import annotations

import inspect
import logging
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from engine.devices import free_device_memory, is_out_of_memory
from engine.evaluation.likelihood import max_positions, start_token

log = logging.getLogger(__name__)


# -- continuation NLLs: each prompt run once, the head only where a token is scored -----------
# Rows of scored positions put through the output head and a float32 log-softmax at a time:
# bounds those full-vocabulary tensors to about 64 MB each whatever the vocabulary.
HEAD_CHUNK_ENTRIES = 1 << 24
# Tokens of distinct prompts prefilled in one forward pass (left-padded width x prompts).
PREFILL_TOKENS = 8192
# Bytes of key/value cache the continuation rows of one batch may hold (the prompt's cache is
# copied to each of its rows): caps the rows of long prompts.
CONTINUATION_CACHE_BUDGET = 1 << 30
# A batch's padding (left-padded prompts, right-padded continuations) stays under this share of
# its real tokens, plus PADDING_SLACK positions.
PADDING_SHARE = 0.25
PADDING_SLACK = 64


@dataclass
class _Piece:
    """Rows sharing one conditioning prefix (start token + prompt tokens, after truncation):
    `rows` are (index in the input, the continuation's scored tokens), each non-empty."""

    prefix: tuple[int, ...]
    rows: list[tuple[int, list[int]]]


@dataclass(frozen=True)
class _Split:
    """How the model is run: `body` gives final hidden states (with a cache) and `head` turns
    them into logits at the scored positions only; when the model cannot be split exactly,
    `body` is the whole model and `head` is None (logits at every continuation position)."""

    body: object
    head: object | None
    cache_arg: str


_SPLITS: "weakref.WeakKeyDictionary[object, _Split]" = weakref.WeakKeyDictionary()   # per loaded model


def _model_split(model, probe_token: int, device: torch.device) -> _Split:
    """`model.base_model` + `model.get_output_embeddings()` where that gives the model's own
    logits (checked once per model on a short input, again if its head or base model is
    replaced: models that scale or cap their logits after the head, or wrap it, fall back to
    the whole model)."""
    body, head = getattr(model, "base_model", None), None
    try:
        head = model.get_output_embeddings()
    except Exception:  # noqa: BLE001 - no head: the whole model is used
        head = None
    split = _SPLITS.get(model)
    if split is not None and (split.head is None or (split.body is body and split.head is head)):
        return split                       # checked before (and its modules not replaced since)
    params = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"
    split = _Split(model, None, cache_arg)
    if body is not None and body is not model and head is not None:
        try:
            vocab = int(getattr(model.config, "vocab_size", None) or probe_token + 1)
            ids = torch.tensor([[probe_token] + [(probe_token + 1 + 7919 * i) % vocab for i in range(7)]],
                               device=device)
            whole = model(input_ids=ids, use_cache=False).logits
            hidden = body(input_ids=ids, use_cache=False).last_hidden_state
            parts = head(hidden)
            body_params = inspect.signature(body.forward).parameters
            body_cache = "cache" if "cache" in body_params else "past_key_values"
            if (parts.shape == whole.shape and bool(whole.abs().amax() > 0)
                    and torch.allclose(parts, whole, rtol=1e-5, atol=1e-6)):
                split = _Split(body, head, body_cache)
            else:
                log.info("continuation NLLs: %s's logits are not its head applied to its base model's "
                         "output; the whole model is run", type(model).__name__)
        except Exception:  # noqa: BLE001 - anything unexpected: the whole model
            log.info("continuation NLLs: %s cannot be split into base model and head", type(model).__name__,
                     exc_info=True)
    _SPLITS[model] = split
    return split


def scored_sequence(start: int, limit: int | None, prompt_ids: Sequence[int],
                    cont_ids: Sequence[int]) -> tuple[list[int], int]:
    """(token sequence, n) that `continuation_nlls` runs for one row: the start token, the
    prompt's and the continuation's tokens (each tokenized alone, no special tokens), cut to the
    model's `limit` positions by dropping the oldest tokens after the start token; its last n
    tokens are the scored ones (n = the continuation's tokens, fewer only when the
    continuation alone exceeds the limit)."""
    seq = [start] + list(prompt_ids) + list(cont_ids)
    if limit is not None and len(seq) > limit:
        seq = [start] + seq[len(seq) - limit + 1:]
    return seq, min(len(cont_ids), len(seq) - 1)


def _continuation_pieces(tokenizer, start: int, limit: int | None, prompts: Sequence[str],
                         continuations: Sequence[str]) -> tuple[list[_Piece], list[int]]:
    """The rows grouped by their conditioning prefix (samples of one prompt share it), and
    each row's scored-token count. Tokenisation as `continuation_nlls` documents it."""
    distinct = list(dict.fromkeys(prompts))
    encoded = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"])) if distinct else {}
    cont_ids = tokenizer(list(continuations), add_special_tokens=False)["input_ids"] if continuations else []
    pieces: dict[tuple[int, ...], _Piece] = {}
    counts = []
    for index, (prompt, c_ids) in enumerate(zip(prompts, cont_ids)):
        seq, n = scored_sequence(start, limit, encoded[prompt], c_ids)
        counts.append(n)
        if n == 0:
            continue
        prefix = tuple(seq[:len(seq) - n])
        pieces.setdefault(prefix, _Piece(prefix, [])).rows.append((index, seq[len(seq) - n:]))
    return list(pieces.values()), counts


def _plan_batches(pieces: list[_Piece], rows_per_batch: int, kv_per_position: int,
                  max_rows_for_width: Callable[[int], int]) -> list[list[_Piece]]:
    """Rows in batches, a row at a time in the order (prompt length, prompt, longest
    continuation first): a batch holds at most `rows_per_batch` continuation rows, PREFILL_TOKENS
    left-padded prompt tokens and CONTINUATION_CACHE_BUDGET of expanded cache, and computes at
    most PADDING_SHARE more positions than its real tokens (plus PADDING_SLACK): a batch ends
    where the next row would pad more. A prompt's rows may so land in two batches (each
    prefills the prompt)."""
    ordered = sorted(pieces, key=lambda p: (len(p.prefix), p.prefix))
    batches: list[list[_Piece]] = []
    current: list[_Piece] = []
    rows = width = longest = real = 0
    for piece in ordered:
        piece.rows.sort(key=lambda r: (-len(r[1]), r[0]))          # longest continuation first
        for row in piece.rows:
            n, cached = len(row[1]), len(piece.prefix) - 1
            new_piece = not current or current[-1].prefix != piece.prefix
            groups = len(current) + new_piece
            w, m = max(width, cached), max(longest, n)
            r = rows + 1
            total = real + n + (cached if new_piece else 0)
            cap = min(rows_per_batch, max_rows_for_width(m),
                      CONTINUATION_CACHE_BUDGET // max(1, kv_per_position * (w + m)))
            if current and (r > max(1, cap) or groups * w > PREFILL_TOKENS
                            or groups * w + r * m > (1 + PADDING_SHARE) * total + PADDING_SLACK):
                batches.append(current)
                current, rows, width, longest, real = [], 0, 0, 0, 0
                new_piece, w, m, r, total = True, cached, n, 1, n + cached
            if new_piece:
                current.append(_Piece(piece.prefix, []))
            current[-1].rows.append(row)
            rows, width, longest, real = r, w, m, total
    if current:
        batches.append(current)
    return batches


def _score_batch(split: _Split, batch: Sequence[_Piece], device: torch.device,
                 pad: int) -> list[tuple[int, float]]:
    """(index, mean NLL) of every row of the batch. Each distinct prompt's tokens but its last
    are run once (left-padded), the cache is expanded to the prompt's rows, and each row then
    feeds the prompt's last token and its continuation but the last token (right-padded), so
    the hidden state at column t predicts continuation token t."""
    rows = [(g, index, cont) for g, piece in enumerate(batch) for index, cont in piece.rows]
    cached = [len(piece.prefix) - 1 for piece in batch]
    width = max(cached)
    cache, prefix_mask = None, None
    select = torch.tensor([g for g, _, _ in rows])
    kwargs = {}
    if width > 0:
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for g, piece in enumerate(batch):
            if cached[g]:
                ids[g, width - cached[g]:] = torch.tensor(piece.prefix[:-1])
                mask[g, width - cached[g]:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = split.body(input_ids=ids.to(device), attention_mask=mask.to(device),
                         position_ids=positions.to(device), use_cache=True)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        del out
        if len(rows) != len(batch):                       # a prompt with several rows
            cache.batch_select_indices(select.to(device))
        prefix_mask = mask.index_select(0, select)
        kwargs = {split.cache_arg: cache}
    longest = max(len(cont) for _, _, cont in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    targets = []
    for r, (g, _, cont) in enumerate(rows):
        feed = [batch[g].prefix[-1]] + cont[:-1]
        ids[r, :len(feed)] = torch.tensor(feed)
        mask[r, :len(feed)] = 1
        targets.extend(cont)
    # padding columns get position 0 (a row's own positions stay inside the model's table)
    positions = (torch.tensor(cached).index_select(0, select).unsqueeze(1) + torch.arange(longest)) * mask
    full_mask = mask if prefix_mask is None else torch.cat([prefix_mask, mask], dim=1)
    out = split.body(input_ids=ids.to(device), attention_mask=full_mask.to(device),
                     position_ids=positions.to(device), use_cache=cache is not None, **kwargs)
    scored = mask.bool().to(device)
    if split.head is None:
        states = out.logits[scored]                       # (scored tokens, vocab) logits
        vocab = states.shape[-1]
    else:
        states = out.last_hidden_state[scored]            # (scored tokens, hidden)
        weight = getattr(split.head, "weight", None)
        vocab = weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() == 2 else 1 << 17
    del out, cache, kwargs
    targets_t = torch.tensor(targets, device=device)
    step = max(1, HEAD_CHUNK_ENTRIES // vocab)
    logp = []
    for a in range(0, states.shape[0], step):
        logits = states[a:a + step] if split.head is None else split.head(states[a:a + step])
        logp.append(torch.log_softmax(logits.float(), dim=-1).gather(1, targets_t[a:a + step, None])
                    .squeeze(1).cpu())
        del logits
    per_row = torch.cat(logp).split([len(cont) for _, _, cont in rows])
    return [(index, float(-lp.double().mean())) for (_, index, _), lp in zip(rows, per_row)]


@torch.inference_mode()
def continuation_nlls(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                      device: torch.device, batch_size: int = 64) -> list[tuple[float | None, int]]:
    """(mean NLL per token in nats, token count) of each continuation given its prompt:
    -1/T * sum_t log p(c_t | start token, prompt tokens, c_<t), where the prompt and the
    continuation are tokenized separately with `tokenizer` (no special tokens) and joined,
    so the T scored tokens are exactly the continuation's. An empty continuation (T = 0) gives
    (None, 0). Sequences longer than the model's positions keep the continuation and drop the
    prompt's oldest tokens.

    How (the sampler's way, issue 32): rows with the same conditioning tokens (the k samples
    of a prompt) are grouped; each distinct prompt is run once, its key/value cache expanded
    to its rows, and the rows' continuations run against it; the output head and the float32
    log-softmax are computed only at the scored positions (the base model's hidden states
    gathered there, where the model's logits are exactly its head applied to them; otherwise
    the whole model's logits at the continuation positions). Batches hold prompts of similar
    length (left-padded, as in the sampler) and at most `batch_size` continuation rows
    (right-padded to the batch's longest); a batch that runs out of memory is split. Results
    equal a separate forward pass per row up to floating-point rounding (a row's value can
    change in the last digits with the batch it shares, ~1e-7 relative)."""
    start = start_token(tokenizer)
    limit = max_positions(model)
    pieces, counts = _continuation_pieces(tokenizer, start, limit, list(prompts), list(continuations))
    out: list[tuple[float | None, int]] = [(None, 0)] * len(counts)
    if not pieces:
        return out
    split = _model_split(model, start, device)
    from engine.evaluation.sampler import kv_bytes_per_position  # on use: transformers
    dtype = next(model.parameters()).dtype
    kv_per_position = kv_bytes_per_position(model, torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4)
    vocab = int(getattr(model.config, "vocab_size", None) or 50_000)
    if split.head is None:   # whole-model logits: bound the rows of one pass by their size
        def max_rows_for_width(n: int) -> int:
            return max(1, HEAD_CHUNK_ENTRIES * 4 // max(1, n * vocab))
    else:
        def max_rows_for_width(n: int) -> int:
            return batch_size
    pending = _plan_batches(pieces, batch_size, kv_per_position, max_rows_for_width)
    while pending:
        batch = pending.pop(0)
        try:
            for index, nll in _score_batch(split, batch, device, start):
                out[index] = (nll, counts[index])
            continue
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
            if not is_out_of_memory(exc) or (len(batch) == 1 and len(batch[0].rows) == 1):
                raise
        # outside the except block: the failed batch's tensors are released by now
        free_device_memory(device)
        log.warning("out of memory scoring %d continuations; splitting", sum(len(p.rows) for p in batch))
        if len(batch) > 1:
            half = (len(batch) + 1) // 2
            pending[:0] = [batch[:half], batch[half:]]
        else:
            piece = batch[0]
            half = (len(piece.rows) + 1) // 2
            pending[:0] = [[_Piece(piece.prefix, piece.rows[:half])], [_Piece(piece.prefix, piece.rows[half:])]]
    return out
