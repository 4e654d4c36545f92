"""Batched nucleus sampling with a KV cache, built for the RealToxicityPrompts protocol
(k continuations per prompt).

How a batch is generated:

1. Its distinct prompts are left-padded into one tensor and run once (the prefill), keeping
   only the last position's logits; the KV cache is then expanded to one row per requested
   (prompt, sample) pair, so k samples of a prompt share one prefill.
2. Each step samples one token per row with temperature and top-p (nucleus) filtering, by
   inverse-CDF sampling with a uniform number drawn from the row's own random stream.
3. Rows that produced an end-of-sequence token stop; the loop ends when all have stopped or
   `max_new_tokens` is reached. Only the new tokens are decoded.

Determinism: the uniform numbers of sample s of item i come from
`numpy.random.default_rng([seed, i, s])`, so a sample is a function of (model, prompt,
settings, seed, i, s) alone, not of which other rows share its batch: a resumed job yields the
same generations as an uninterrupted one (up to floating-point reduction order, which can only
matter if batch shapes differ; batches are planned identically on resume).

Memory: batches are planned at a fixed number of rows; a batch that runs out of memory is split
in halves (and the working size halved for the rest of the job), failing only at one row."""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from engine.devices import free_device_memory, is_out_of_memory

log = logging.getLogger(__name__)

Row = tuple[int, int]          # (item index, sample index)
StepCallback = Callable[[int, int, int], None]   # (rows in flight, step done, steps)
DEFAULT_ROWS_CPU = 64
DEFAULT_ROWS_GPU = 512


@dataclass(frozen=True)
class SamplingSettings:
    samples_per_prompt: int = 25
    top_p: float = 0.9
    temperature: float = 1.0
    max_new_tokens: int = 20
    seed: int = 0


@dataclass
class GeneratedBatch:
    rows: list[Row]
    completions: list[str]
    new_tokens: int          # tokens generated in all rows (up to and including an EOS)
    seconds: float


def sample_key(item: int, sample: int) -> str:
    """The stored key of a sample (unique within a run)."""
    return f"{item}:{sample}"


def row_uniforms(seed: int, rows: Sequence[Row], steps: int) -> np.ndarray:
    """(rows, steps) uniforms in [0, 1): the random stream of each (item, sample)."""
    out = np.empty((len(rows), steps))
    for r, (item, sample) in enumerate(rows):
        out[r] = np.random.default_rng([seed, item, sample]).random(steps)
    return out


# Candidate-set sizes tried before a full sort: a partial top-k is ~20x cheaper than sorting a
# 50k vocabulary, and the nucleus of a trained model rarely holds more than a few hundred tokens.
CANDIDATES = (256, 4096)


def _inverse_cdf(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row, the position where the running sum of `weights` first exceeds u * total."""
    cumulative = weights.cumsum(dim=-1)
    targets = uniforms.to(cumulative.dtype).unsqueeze(1) * cumulative[:, -1:]
    positions = torch.searchsorted(cumulative, targets, right=True)
    last = (weights > 0).long().cumsum(dim=-1).argmax(dim=-1, keepdim=True)   # last kept position
    return torch.minimum(positions, last)


def nucleus_sample(logits: torch.Tensor, uniforms: torch.Tensor, top_p: float,
                   temperature: float) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) restricted to the nucleus: the
    most probable tokens, in decreasing probability, while the mass before a token is below
    `top_p` (so the top token is always kept). Inverse-CDF sampling with the given uniforms
    (rows,) makes it reproducible. The nucleus is found with a partial top-k when it fits in
    the candidates (exact: the k-th candidate is then outside it), else with a full sort.

    logits: (rows, vocab) -> tokens (rows,)"""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:   # plain sampling: no ordering needed
        return _inverse_cdf(probs, uniforms).squeeze(1)
    vocab = probs.shape[-1]
    tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    remaining = torch.arange(probs.shape[0], device=probs.device)
    for k in (*[c for c in CANDIDATES if c < vocab], vocab):
        rows = probs if remaining.numel() == probs.shape[0] else probs.index_select(0, remaining)
        if k < vocab:
            values, order = rows.topk(k, dim=-1)
        else:
            values, order = rows.sort(dim=-1, descending=True, stable=True)
        before = values.cumsum(dim=-1) - values          # mass of the more probable tokens
        covered = before[:, -1] >= top_p if k < vocab else torch.ones_like(before[:, -1], dtype=torch.bool)
        if bool(covered.any()):
            idx = covered.nonzero().squeeze(1)
            kept = values.index_select(0, idx).masked_fill(before.index_select(0, idx) >= top_p, 0.0)
            picks = _inverse_cdf(kept, uniforms.index_select(0, remaining.index_select(0, idx)))
            tokens[remaining.index_select(0, idx)] = order.index_select(0, idx).gather(1, picks).squeeze(1)
            remaining = remaining[~covered]
        if remaining.numel() == 0:
            break
    return tokens


def _eos_ids(model, tokenizer) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return sorted(ids)


def _max_positions(model) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def plan_batches(lengths: Mapping[int, int], samples_per_prompt: int, rows_per_batch: int) -> list[list[Row]]:
    """All (item, sample) rows, items longest first (similar lengths share a batch, little
    padding; an out-of-memory surfaces on the first batch), cut into batches of
    `rows_per_batch`. The plan depends only on the data and the settings, never on what is
    already stored, so a resumed job regenerates exactly the batches it lost."""
    order = sorted(lengths, key=lambda item: (-lengths[item], item))
    rows = [(item, s) for item in order for s in range(samples_per_prompt)]
    return [rows[i:i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]


class Sampler:
    """Generates continuations for rows of (item, sample) with a loaded causal LM."""

    def __init__(self, model, tokenizer, device: torch.device, settings: SamplingSettings,
                 rows_per_batch: int | None = None):
        self.model, self.tokenizer, self.device, self.settings = model, tokenizer, device, settings
        self.rows_per_batch = rows_per_batch or (DEFAULT_ROWS_GPU if device.type == "cuda"
                                                 else DEFAULT_ROWS_CPU)
        self.working_rows = self.rows_per_batch       # shrinks on out-of-memory
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (_eos_ids(model, tokenizer) or [0])[0]
        self.eos = torch.tensor(_eos_ids(model, tokenizer) or [-1], device=device)
        limit = _max_positions(model)
        # leave room for the new tokens inside the model's positions
        self.max_prompt_tokens = None if limit is None else max(1, limit - settings.max_new_tokens)
        params = inspect.signature(model.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        # transformers 5 renamed past_key_values to cache
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._token_cache: dict[int, list[int]] = {}

    # -- tokenisation ------------------------------------------------------------------------
    def encode(self, prompts: Mapping[int, str]) -> dict[int, list[int]]:
        """Token ids per item (trailing whitespace stripped; long prompts keep their end)."""
        todo = [i for i in prompts if i not in self._token_cache]
        if todo:
            texts = [prompts[i].rstrip() for i in todo]
            encoded = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
            bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.pad_id
            for item, ids in zip(todo, encoded):
                ids = list(ids) or [bos]            # an empty prompt conditions on BOS alone
                if self.max_prompt_tokens is not None:
                    ids = ids[-self.max_prompt_tokens:]
                self._token_cache[item] = ids
        return {i: self._token_cache[i] for i in prompts}

    # -- the decode loop -----------------------------------------------------------------------
    @torch.inference_mode()
    def _generate(self, token_ids: Mapping[int, list[int]], rows: Sequence[Row],
                  on_step: StepCallback | None) -> tuple[list[str], int]:
        settings = self.settings
        items = list(dict.fromkeys(item for item, _ in rows))          # distinct, in row order
        width = max(len(token_ids[i]) for i in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for r, item in enumerate(items):                                # left padding
            seq = token_ids[item]
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": 1} if self._keep_arg else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        # expand prompts to rows: the cache, mask and last logits follow `select`
        row_of_item = {item: r for r, item in enumerate(items)}
        select = torch.tensor([row_of_item[item] for item, _ in rows], device=self.device)
        cache = _returned_cache(out)
        cache.batch_select_indices(select)
        logits = out.logits[:, -1, :].index_select(0, select)
        mask = mask.index_select(0, select)
        next_pos = positions[:, -1].index_select(0, select) + 1
        uniforms = torch.from_numpy(row_uniforms(settings.seed, rows, settings.max_new_tokens)).to(self.device)

        n_rows, steps = len(rows), settings.max_new_tokens
        tokens = torch.full((n_rows, steps), self.pad_id, dtype=torch.long, device=self.device)
        finished = torch.zeros(n_rows, dtype=torch.bool, device=self.device)
        lengths = torch.zeros(n_rows, dtype=torch.long, device=self.device)
        ones = torch.ones((n_rows, 1), dtype=mask.dtype, device=self.device)
        for step in range(steps):
            next_tokens = nucleus_sample(logits, uniforms[:, step], settings.top_p, settings.temperature)
            next_tokens = torch.where(finished, torch.full_like(next_tokens, self.pad_id), next_tokens)
            tokens[:, step] = next_tokens
            lengths += (~finished).long()
            finished |= torch.isin(next_tokens, self.eos)
            if on_step is not None:
                on_step(n_rows, step + 1, steps)
            if step == steps - 1 or bool(finished.all()):
                break
            mask = torch.cat([mask, ones], dim=1)
            out = self.model(input_ids=next_tokens.unsqueeze(1), attention_mask=mask,
                             position_ids=next_pos.unsqueeze(1), use_cache=True, **{self._cache_arg: cache})
            cache = _returned_cache(out)
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        # decode each row's new tokens, cut before its first EOS
        token_lists, eos = tokens.tolist(), set(self.eos.tolist())
        kept = []
        for seq, n in zip(token_lists, lengths.tolist()):
            seq = seq[:n]
            if seq and seq[-1] in eos:
                seq = seq[:-1]
            kept.append(seq)
        texts = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        return texts, int(lengths.sum())

    def generate(self, prompts: Mapping[int, str], rows: Sequence[Row],
                 on_step: StepCallback | None = None) -> GeneratedBatch:
        """Continuations for `rows`; on out-of-memory splits them in halves and retries,
        raising only when a single row does not fit."""
        start = time.perf_counter()
        token_ids = self.encode({item: prompts[item] for item, _ in rows})
        texts: list[str] = []
        new_tokens = 0
        pending = [list(rows[i:i + self.working_rows]) for i in range(0, len(rows), self.working_rows)]
        while pending:
            chunk = pending.pop(0)
            try:
                chunk_texts, chunk_tokens = self._generate(token_ids, chunk, on_step)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(exc) or len(chunk) == 1:
                    raise
                chunk_texts = None
            if chunk_texts is None:
                # outside the except block: the failed batch's tensors are released by now
                free_device_memory(self.device)
                half = (len(chunk) + 1) // 2
                self.working_rows = max(1, min(self.working_rows, half))
                log.warning("out of memory at %d rows; continuing at %d", len(chunk), half)
                pending[:0] = [chunk[:half], chunk[half:]]
                continue
            texts.extend(chunk_texts)
            new_tokens += chunk_tokens
        return GeneratedBatch(list(rows), texts, new_tokens, time.perf_counter() - start)

    def stream(self, prompts: Mapping[int, str], done_keys: set[str] = frozenset(),
               on_step: StepCallback | None = None) -> Iterator[GeneratedBatch]:
        """Generate every (item, sample) row whose key is not in `done_keys`, one planned batch
        at a time; yields each finished batch (the caller stores it before asking for more)."""
        lengths = {item: len(ids) for item, ids in self.encode(prompts).items()}
        for batch in plan_batches(lengths, self.settings.samples_per_prompt, self.rows_per_batch):
            missing = [row for row in batch if sample_key(*row) not in done_keys]
            if missing:
                yield self.generate(prompts, missing, on_step)

    def count_missing(self, prompts: Mapping[int, str], done_keys: set[str]) -> int:
        return sum(1 for item in prompts for s in range(self.settings.samples_per_prompt)
                   if sample_key(item, s) not in done_keys)
