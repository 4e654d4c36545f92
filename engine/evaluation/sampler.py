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
matter when batch shapes differ: measured identical on SmolLM2 at 64 and 256 rows on CPU).

Batches: all rows are ordered longest prompt first (similar lengths share a batch: little
padding, and an out-of-memory surfaces on the first batch) and cut into chunks as they are
generated. Without an explicit `rows_per_batch` the chunk size adapts to memory: on CPU it is
capped by a key/value-cache budget (`CPU_CACHE_BUDGET`) and `DEFAULT_ROWS_CPU`; on a GPU it
starts at `DEFAULT_ROWS_GPU` and doubles after each chunk whose peak memory stayed under
`GPU_GROW_BELOW` of the device, until `MAX_ROWS_GPU` or the first out-of-memory. A chunk that
runs out of memory is split in halves (and the working size halved for the rest of the job),
failing only at one row; growth then stops.

Speed (measured with `compfair bench`): one prefill per distinct prompt; the KV cache is
expanded once into buffers with room for every new token, so a decode step writes one position
instead of copying the whole cache (`reserved_cache`); nucleus sampling (`nucleus_sampling`)
tries a partial top-k before a full sort; temperature 1 skips the division; the loop runs under
`torch.inference_mode` and holds no per-row Python work. On CPU the sampler also switches on
the kernels of `cpu_paths` (decode attention, output head in vocabulary slices). Measured on
SmolLM2, 2 cores, 32 prompts x 8 x 20 tokens (identical generations throughout): 256 instead of
64 rows +25% generations per CPU-second, in-place cache +4%, decode attention +8-12%, sliced
output head -13% time.

With `record_nll=True` (the model is its own fluency reference: `sampled_fluency`) each step
also takes -log p(sampled token) from the raw logits at temperature 1 (`token_nlls`: one
float32 logsumexp and gather per row, no vocabulary-sized output; rows already finished are
computed too and ignored, which costs less than selecting the live ones)."""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch

from engine.devices import free_device_memory, is_out_of_memory
from engine.evaluation.cpu_paths import cpu_fast_paths
from engine.evaluation.nucleus_sampling import Row, nucleus_sample, row_uniforms
from engine.evaluation.reserved_cache import reserve_cache
from engine.errors import JobFailed

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, int], None]   # (rows in flight, step done, steps)
DEFAULT_ROWS_CPU = 256          # SmolLM2 on 2 cores: ~25% more generations per CPU-second than 64
DEFAULT_ROWS_GPU = 512          # the starting size; grows while memory allows
MAX_ROWS_GPU = 16384
GPU_GROW_BELOW = 0.5            # grow when a chunk's peak memory stayed under this share of the GPU
CPU_CACHE_BUDGET = 1 << 30      # bytes of key/value cache + logits per chunk on CPU


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
    # each row's new token ids, cut before its EOS (what `completions` decodes); empty when
    # a backend does not report them
    token_ids: list[list[int]] = field(default_factory=list)
    # with `Sampler(record_nll=True)`: each row's conditioning tokens (the prompt as sampled)
    # and sum over its `token_ids` of -log p(token | prompt, earlier tokens) under the model's
    # full distribution (float32 log-softmax of the raw logits: temperature 1, no top-p), each
    # token's value summed in float64; empty otherwise
    prompt_ids: list[list[int]] = field(default_factory=list)
    nll_sums: list[float] = field(default_factory=list)


def token_nlls(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[token] per row in float32, temperature 1, no truncation: what the
    fluency pass (`continuation_nlls`) computes for a token (as logsumexp - logit: no
    vocabulary-sized output). logits (rows, vocab), tokens (rows,) -> (rows,)"""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - logits.gather(1, tokens.unsqueeze(1)).squeeze(1)


def sample_key(item: int, sample: int) -> str:
    """The stored key of a sample (unique within a run)."""
    return f"{item}:{sample}"


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


def _refuse_nonfinite(nonfinite: torch.Tensor) -> None:
    """Fail the job when any row sampled from NaN or infinite logits (`engine.errors.JobFailed`):
    nothing of the chunk is stored, so no metric is computed from a broken model's output."""
    bad = int(nonfinite.sum())
    if bad:
        raise JobFailed(f"the model gave non-finite (NaN or infinite) next-token logits in {bad} of "
                        f"{nonfinite.numel()} rows of a batch: its outputs cannot be sampled; "
                        "nothing was stored for them")


def _returned_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def plan_batches(lengths: Mapping[int, int], samples_per_prompt: int, rows_per_batch: int) -> list[list[Row]]:
    """`plan_rows` cut into batches of `rows_per_batch`: what `Sampler.stream` generates with a
    fixed `rows_per_batch` and nothing stored yet."""
    rows = plan_rows(lengths, samples_per_prompt)
    return [rows[i:i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]


def plan_rows(lengths: Mapping[int, int], samples_per_prompt: int) -> list[Row]:
    """Every (item, sample) row, items longest first (ties by item index)."""
    order = sorted(lengths, key=lambda item: (-lengths[item], item))
    return [(item, s) for item in order for s in range(samples_per_prompt)]


def kv_bytes_per_position(model, dtype_size: int) -> int:
    """Bytes of key/value cache one row needs per position (all layers), from the config."""
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 12
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 12
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 768
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return int(layers) * 2 * int(kv_heads) * int(head_dim) * dtype_size


class Sampler:
    """Generates continuations for rows of (item, sample) with a loaded causal LM.

    `rows_per_batch`: a fixed chunk size (the job's `batch_size`); None adapts it to memory
    (see the module docstring). `peak_memory` is the largest device memory peak of a chunk
    (CUDA only, bytes)."""

    def __init__(self, model, tokenizer, device: torch.device, settings: SamplingSettings,
                 rows_per_batch: int | None = None, record_nll: bool = False):
        self.model, self.tokenizer, self.device, self.settings = model, tokenizer, device, settings
        self.record_nll = record_nll        # GeneratedBatch.nll_sums (see there)
        self.adaptive = rows_per_batch is None
        self.rows_per_batch = rows_per_batch or (DEFAULT_ROWS_GPU if device.type == "cuda"
                                                 else DEFAULT_ROWS_CPU)
        self.working_rows = self.rows_per_batch       # shrinks on out-of-memory, grows on GPU
        self.peak_memory = 0
        self._may_grow = self.adaptive and device.type == "cuda"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (_eos_ids(model, tokenizer) or [0])[0]
        self.eos = torch.tensor(_eos_ids(model, tokenizer) or [-1], device=device)
        limit = _max_positions(model)
        if limit is not None and settings.max_new_tokens >= limit:
            raise JobFailed(f"max_new_tokens must be below the model's {limit} positions (at least "
                            f"one is the prompt's), got {settings.max_new_tokens}")   # as at submit
        # leave room for the new tokens inside the model's positions
        self.max_prompt_tokens = None if limit is None else max(1, limit - settings.max_new_tokens)
        params = inspect.signature(model.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        # transformers 5 renamed past_key_values to cache
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._token_cache: dict[int, list[int]] = {}
        # items whose prompt was longer than max_prompt_tokens: its token count (the run
        # records how many prompts kept only their end)
        self.truncated: dict[int, int] = {}
        dtype = next(model.parameters()).dtype
        vocab = getattr(model.config, "vocab_size", None) or 50_000
        self._kv_per_position = kv_bytes_per_position(model, torch.finfo(dtype).bits // 8)
        self._logit_bytes = int(vocab) * 4 * 4          # logits, probabilities, top-k, masks (fp32)

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
                if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
                    self.truncated[item] = len(ids)
                    ids = ids[-self.max_prompt_tokens:]
                self._token_cache[item] = ids
        return {i: self._token_cache[i] for i in prompts}

    # -- the decode loop -----------------------------------------------------------------------
    @torch.inference_mode()
    def _generate(self, token_ids: Mapping[int, list[int]], rows: Sequence[Row],
                  on_step: StepCallback | None) -> tuple[list[str], int, list[list[int]], list[float]]:
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
        n_rows, steps = len(rows), settings.max_new_tokens
        cache = _returned_cache(out)
        reserve_cache(cache, select, steps - 1)
        logits = out.logits[:, -1, :].index_select(0, select)
        del out
        # the attention mask of every step, filled in advance: step s sees the first width + s columns
        full_mask = torch.ones((n_rows, width + steps), dtype=mask.dtype, device=self.device)
        full_mask[:, :width] = mask.index_select(0, select)
        next_pos = positions[:, -1].index_select(0, select) + 1
        uniforms = torch.from_numpy(row_uniforms(settings.seed, rows, steps)).to(self.device)

        tokens = torch.full((n_rows, steps), self.pad_id, dtype=torch.long, device=self.device)
        finished = torch.zeros(n_rows, dtype=torch.bool, device=self.device)
        lengths = torch.zeros(n_rows, dtype=torch.long, device=self.device)
        pad = torch.tensor(self.pad_id, device=self.device)
        # rows whose logits were NaN or infinite at a step they sampled in (kept on the device:
        # no wait per step); such a model's "continuations" would be scored as if it had spoken
        nonfinite = torch.zeros(n_rows, dtype=torch.bool, device=self.device)
        # a GPU step queues its kernels without waiting; checking for "all finished" forces a
        # wait, so on GPU it is checked every few steps only
        check_every = 1 if self.device.type == "cpu" else 4
        # -log p of each sampled token at temperature 1 (only a row's tokens before its EOS count)
        token_nll = torch.zeros((n_rows, steps), dtype=torch.float32, device=self.device) if self.record_nll else None
        for step in range(steps):
            nonfinite |= ~finished & ~torch.isfinite(logits).all(dim=-1)
            next_tokens = nucleus_sample(logits, uniforms[:, step], settings.top_p, settings.temperature)
            next_tokens = torch.where(finished, pad, next_tokens)
            tokens[:, step] = next_tokens
            if token_nll is not None:
                token_nll[:, step] = token_nlls(logits, next_tokens)
            lengths += ~finished
            finished |= torch.isin(next_tokens, self.eos)
            if on_step is not None:
                on_step(n_rows, step + 1, steps)
            if step == steps - 1 or (step % check_every == check_every - 1 and bool(finished.all())):
                break
            out = self.model(input_ids=next_tokens.unsqueeze(1), attention_mask=full_mask[:, :width + step + 1],
                             position_ids=next_pos.unsqueeze(1), use_cache=True, **{self._cache_arg: cache})
            cache = _returned_cache(out)
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        _refuse_nonfinite(nonfinite)
        # decode each row's new tokens, cut before its first EOS
        token_lists, eos = tokens.tolist(), set(self.eos.tolist())
        kept = []
        for seq, n in zip(token_lists, lengths.tolist()):
            seq = seq[:n]
            if seq and seq[-1] in eos:
                seq = seq[:-1]
            kept.append(seq)
        texts = self.tokenizer.batch_decode(kept, skip_special_tokens=True)
        sums = [] if token_nll is None else [
            float(torch.tensor(values[:len(seq)], dtype=torch.float64).sum())
            for values, seq in zip(token_nll.cpu().tolist(), kept)]
        return texts, int(lengths.sum()), kept, sums

    def _rows_for_width(self, width: int) -> int:
        """The chunk size for prompts of `width` tokens: the working size, and on CPU (when
        adaptive) no more rows than fit the cache budget."""
        if not self.adaptive or self.device.type != "cpu":
            return self.working_rows
        per_row = self._kv_per_position * (width + self.settings.max_new_tokens) + self._logit_bytes
        return max(1, min(self.working_rows, CPU_CACHE_BUDGET // per_row))

    def _after_chunk(self, rows: int) -> None:
        """Track the peak memory of the chunk just generated and grow the working size on GPU
        while a full chunk used less than GPU_GROW_BELOW of the device."""
        if self.device.type != "cuda":
            return
        peak = torch.cuda.max_memory_allocated(self.device)
        self.peak_memory = max(self.peak_memory, peak)
        total = torch.cuda.get_device_properties(self.device).total_memory
        if self._may_grow and rows >= self.working_rows and peak < GPU_GROW_BELOW * total \
                and self.working_rows < MAX_ROWS_GPU:
            self.working_rows = min(MAX_ROWS_GPU, self.working_rows * 2)
            log.info("peak memory %.1f GiB of %.1f: batch grows to %d rows", peak / 2**30,
                     total / 2**30, self.working_rows)
        torch.cuda.reset_peak_memory_stats(self.device)

    def generate(self, prompts: Mapping[int, str], rows: Sequence[Row],
                 on_step: StepCallback | None = None) -> GeneratedBatch:
        """Continuations for `rows`; on out-of-memory splits them in halves and retries,
        raising only when a single row does not fit."""
        start = time.perf_counter()
        token_ids = self.encode({item: prompts[item] for item, _ in rows})
        texts: list[str] = []
        ids: list[list[int]] = []
        sums: list[float] = []
        new_tokens = 0
        pending = [list(rows[i:i + self.working_rows]) for i in range(0, len(rows), self.working_rows)]
        while pending:
            chunk = pending.pop(0)
            try:
                with cpu_fast_paths(self.model, self.device):
                    chunk_texts, chunk_tokens, chunk_ids, chunk_sums = self._generate(token_ids, chunk, on_step)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
                if not is_out_of_memory(exc) or len(chunk) == 1:
                    raise
                chunk_texts = None
            if chunk_texts is None:
                # outside the except block: the failed batch's tensors are released by now
                free_device_memory(self.device)
                half = (len(chunk) + 1) // 2
                self.working_rows = max(1, min(self.working_rows, half))
                self._may_grow = False
                log.warning("out of memory at %d rows; continuing at %d", len(chunk), half)
                pending[:0] = [chunk[:half], chunk[half:]]
                continue
            texts.extend(chunk_texts)
            ids.extend(chunk_ids)
            sums.extend(chunk_sums)
            new_tokens += chunk_tokens
            self._after_chunk(len(chunk))
        prompt_ids = [token_ids[item] for item, _ in rows] if self.record_nll else []
        return GeneratedBatch(list(rows), texts, new_tokens, time.perf_counter() - start, ids,
                              prompt_ids, sums)

    def stream(self, prompts: Mapping[int, str], done_keys: set[str] = frozenset(),
               on_step: StepCallback | None = None) -> Iterator[GeneratedBatch]:
        """Generate every (item, sample) row whose key is not in `done_keys`, longest prompts
        first, one chunk at a time; yields each finished chunk (the caller stores it before
        asking for more). Each row's randomness is its own, so how rows are grouped (which
        changes with memory, or on resume) does not change what a row generates."""
        token_ids = self.encode(prompts)
        lengths = {item: len(ids) for item, ids in token_ids.items()}
        rows = [row for row in plan_rows(lengths, self.settings.samples_per_prompt)
                if sample_key(*row) not in done_keys]
        start = 0
        while start < len(rows):
            size = self._rows_for_width(lengths[rows[start][0]])    # the chunk's longest prompt
            chunk = rows[start:start + size]
            start += len(chunk)
            yield self.generate(prompts, chunk, on_step)

    def count_missing(self, prompts: Mapping[int, str], done_keys: set[str]) -> int:
        return sum(1 for item in prompts for s in range(self.settings.samples_per_prompt)
                   if sample_key(item, s) not in done_keys)
