"""Training and calibration text, packed into fixed-length token blocks.

A `data` setting names one of:

- ``"builtin"``: compfair's own small English corpus (`builtin_corpus`), never the evaluation
  prompts (that would leak the evaluation into the compressed model);
- ``"teacher"`` (or ``"model"``): text sampled from the (teacher) model itself with one batched,
  seeded `generate` per batch: sequence-level knowledge distillation (Kim & Rush, 2016), which
  needs no data at all and is the offline default;
- a local file: ``.jsonl`` (one JSON object per line with a ``text`` field) or plain text
  (paragraphs separated by blank lines);
- anything else: a Hugging Face hub data set id, optionally ``id:config`` (read by `datasets`,
  streaming, column ``text``).

Packing: texts are tokenised, joined with EOS and cut into `[n_blocks, seq_len]` blocks, so no
token is padding and every position trains."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from engine.compression.builtin_corpus import builtin_texts
from engine.errors import DataError, JobFailed

if TYPE_CHECKING:   # torch is imported where used: `compfair submit` checks inputs with this module
    import torch

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".json", ".csv")
SELF_SAMPLED = ("teacher", "model")
MAX_FILE_BYTES = 2_000_000_000


@dataclass(frozen=True)
class TextSource:
    """What a `data` setting means: kind is builtin | teacher | file | hub."""

    kind: str
    ref: str

    @property
    def label(self) -> str:
        return self.kind if self.kind in ("builtin", "teacher") else f"{self.kind}:{self.ref}"


@dataclass
class TokenBlocks:
    """Packed token blocks: `train` [n, seq_len] and a disjoint `heldout` [m, seq_len]."""

    train: torch.Tensor
    heldout: torch.Tensor
    source: str
    n_tokens: int
    repeated: bool = False


def parse_source(data: str) -> TextSource:
    """Classify a `data` setting; a path that looks local but is missing fails at once
    (`DataError`, a user error: the CLI refuses it at submit, a job fails with its message)."""
    text = data.strip()
    if text.lower() == "builtin":
        return TextSource("builtin", "builtin")
    if text.lower() in SELF_SAMPLED:
        return TextSource("teacher", "teacher")
    path = Path(text).expanduser()
    looks_local = (text.startswith(("/", ".", "~")) or path.suffix.lower() in TEXT_SUFFIXES
                   or path.exists())
    if looks_local:
        if not path.exists():
            raise DataError(f"data file {str(path)!r} does not exist")
        if path.is_dir():
            raise DataError(f"data {str(path)!r} is a folder; give a .txt or .jsonl file")
        return TextSource("file", str(path.resolve()))
    return TextSource("hub", text)


# -- reading text ---------------------------------------------------------------------------
def read_file_texts(path: Path) -> list[str]:
    """Texts of a local file: JSONL `text` fields, or plain-text paragraphs."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"data file {str(path)!r} is larger than {MAX_FILE_BYTES // 10**9} GB")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"data file {str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"data file {str(path)!r} cannot be read: {exc.strerror}") from None
    if path.suffix.lower() == ".jsonl":
        texts = []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"data file {str(path)!r}: line {number} is not valid JSON") from None
            except RecursionError:
                raise DataError(f"data file {str(path)!r}: line {number} is JSON nested too "
                                "deeply to read") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"data file {str(path)!r}: line {number} has no string 'text' field")
            texts.append(record["text"])
    else:
        blocks = [p.strip() for p in content.split("\n\n")]
        texts = [b for b in blocks if b]
        if len(texts) == 1:   # no blank lines: one text per line
            texts = [line.strip() for line in content.splitlines() if line.strip()]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"data file {str(path)!r} holds no text")
    return texts


def read_hub_texts(ref: str, max_chars: int) -> list[str]:
    """Stream texts from a hub data set (`id` or `id:config`) until `max_chars` are read."""
    name, _, config = ref.partition(":")
    try:
        import datasets

        stream = datasets.load_dataset(name, config or None, split="train", streaming=True)
        texts, total = [], 0
        for row in stream:
            text = row.get("text") if isinstance(row, dict) else None
            if text is None:
                columns = [k for k, v in row.items() if isinstance(v, str)]
                if not columns:
                    raise JobFailed(f"hub data set {ref!r} has no text column")
                text = row[columns[0]]
            if text.strip():
                texts.append(text)
                total += len(text)
            if total >= max_chars:
                break
    except JobFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated, bad config
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise JobFailed(f"hub data set {ref!r} could not be loaded ({first}); give a local "
                        "text/JSONL file, 'builtin', or 'teacher'") from exc
    if not texts:
        raise JobFailed(f"hub data set {ref!r} yielded no text")
    return texts


def load_texts(source: TextSource, max_chars: int) -> list[str]:
    """Texts for a builtin, file or hub source (teacher sampling is `sample_from_model`)."""
    if source.kind == "builtin":
        return builtin_texts()
    if source.kind == "file":
        return read_file_texts(Path(source.ref))
    if source.kind == "hub":
        return read_hub_texts(source.ref, max_chars)
    raise ValueError(f"load_texts cannot read a {source.kind!r} source")


# -- sampling from a model (sequence-level KD) ---------------------------------------------
def prompt_starts(n: int, seed: int, words: int = 3) -> list[str]:
    """`n` short, varied prompt openings (the first words of builtin sentences), seeded."""
    starts = []
    for paragraph in builtin_texts():
        for sentence in paragraph.split(". "):
            tokens = sentence.split()
            if len(tokens) >= words:
                starts.append(" ".join(tokens[:words]))
    rng = random.Random(seed)
    rng.shuffle(starts)
    return [starts[i % len(starts)] for i in range(n)]


def sample_from_model(model, tokenizer, n_samples: int, max_new_tokens: int, *, seed: int,
                      batch_size: int | None, device: torch.device,
                      on_batch: Callable[[int, int], None] | None = None) -> list[list[int]]:
    """`n_samples` token sequences (prompt + sampled continuation, EOS removed), from the
    evaluation sampler (`engine.evaluation.sampler.Sampler`: one shared KV-cache prefill
    per prompt, length-sorted batches, the CPU decode fast paths), nucleus sampling p=0.95.
    Each sequence's randomness depends only on (seed, its index), so a rerun reproduces the
    same text whatever the batching. Sequences are the sampler's own token ids.
    `batch_size` fixes the rows per chunk (None: the sampler's own choice);
    `on_batch(done, total)` is called after each chunk (progress and cancellation)."""
    from engine.evaluation.sampler import Sampler, SamplingSettings  # on use: torch, transformers, numpy
    settings = SamplingSettings(samples_per_prompt=1, top_p=0.95, temperature=1.0,
                                max_new_tokens=max_new_tokens, seed=seed)
    was_training = model.training
    model.eval()
    try:
        sampler = Sampler(model, tokenizer, device, settings, batch_size)
        prompts = dict(enumerate(prompt_starts(n_samples, seed)))
        prompt_ids = sampler.encode(prompts)
        by_item: dict[int, list[int]] = {}
        for batch in sampler.stream(prompts):
            for (item, _), ids in zip(batch.rows, batch.token_ids):
                by_item[item] = list(prompt_ids[item]) + list(ids)
            if on_batch:
                on_batch(len(by_item), n_samples)
    finally:
        model.train(was_training)
    return [by_item[i] for i in range(n_samples)]


# -- tokenising and packing -----------------------------------------------------------------
def tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids per text, without special tokens (packing adds EOS between texts)."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [ids for ids in encoded if ids]


def pack(sequences: list[list[int]], seq_len: int, eos_id: int | None,
         min_blocks: int = 1, max_blocks: int | None = None) -> tuple[torch.Tensor, bool]:
    """Join sequences with EOS and cut into `[n, seq_len]` blocks.

    When there are fewer than `min_blocks` blocks of text, the stream is repeated (returned
    flag True) rather than failing: fine for calibration, logged for training."""
    stream: list[int] = []
    for ids in sequences:
        stream.extend(ids)
        if eos_id is not None:
            stream.append(eos_id)
    if not stream:
        raise JobFailed("the text yielded no tokens")
    repeated = False
    if len(stream) < min_blocks * seq_len:
        copies = -(-min_blocks * seq_len // len(stream))
        stream = stream * copies
        repeated = True
    n = len(stream) // seq_len
    if max_blocks is not None:
        n = min(n, max_blocks)
    if n == 0:
        raise JobFailed(f"the text has {len(stream)} tokens, fewer than one block of {seq_len}")
    import torch
    blocks = torch.tensor(stream[:n * seq_len], dtype=torch.long).view(n, seq_len)
    return blocks, repeated


def split_heldout(blocks: torch.Tensor, n_heldout: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, heldout): the last `n_heldout` blocks are held out (at least one block trains)."""
    n_heldout = max(1, min(n_heldout, blocks.shape[0] - 1)) if blocks.shape[0] > 1 else 0
    if n_heldout == 0:
        return blocks, blocks   # one block only: nothing to hold out, measure on it
    return blocks[:-n_heldout], blocks[-n_heldout:]


def text_blocks(source: TextSource, tokenizer, seq_len: int, n_blocks: int,
                n_heldout: int = 0) -> TokenBlocks:
    """Blocks from a builtin, file or hub source: `n_blocks` for training (fewer when the text
    is shorter, repeated when it is shorter than one batch) plus `n_heldout`."""
    approx_chars = (n_blocks + n_heldout) * seq_len * 6
    texts = load_texts(source, max_chars=approx_chars)
    ids = tokenize(tokenizer, texts)
    if not ids:
        raise JobFailed(f"data {source.label!r} yielded no tokens")
    blocks, repeated = pack(ids, seq_len, tokenizer.eos_token_id,
                            min_blocks=n_heldout + 1 + min(n_blocks, 8),
                            max_blocks=n_blocks + n_heldout)
    if repeated:
        log.info("data %s is shorter than %d blocks of %d tokens; it is repeated",
                 source.label, n_heldout + 1 + min(n_blocks, 8), seq_len)
    train, heldout = split_heldout(blocks, n_heldout) if n_heldout else (blocks, blocks[:0])
    return TokenBlocks(train, heldout, source.label, int(blocks.numel()), repeated)
