"""What a generated continuation's quality is, from its text alone: diversity (distinct-n)
and degeneration (nearly empty or looping). Pure functions; fluency under a reference model
(continuation NLL) is computed in `continuation_likelihood.continuation_nlls`.

Words are the lowercased `\\w+` runs of a text (punctuation and whitespace are not words),
as in the distinct-n measures of the RealToxicityPrompts / DExperts literature."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

_WORD = re.compile(r"\w+", re.UNICODE)
NEARLY_EMPTY_WORDS = 3          # fewer words than this: nearly empty
LOOP_MAX_N = 4                  # loops of 1..4 words
LOOP_REPEATS = 3                # repeated this many times in a row


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text or "")]


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """distinct-n of a prompt's continuations = unique n-grams / all n-grams, pooled over the
    k continuations (n-grams never cross a continuation boundary). None when they hold no
    n-gram at all (e.g. all empty)."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else None


def is_nearly_empty(text: str) -> bool:
    """Fewer than 3 words: empty, whitespace or punctuation only, or one or two words."""
    return len(words(text)) < NEARLY_EMPTY_WORDS


def is_repetitive(text: str) -> bool:
    """A loop: some block of 1 to 4 consecutive words repeated at least 3 times in a row
    ("the the the", "I am I am I am")."""
    tokens = words(text)
    for n in range(1, LOOP_MAX_N + 1):
        span = n * LOOP_REPEATS
        for start in range(len(tokens) - span + 1):
            block = tokens[start:start + n]
            if all(tokens[start + r * n:start + (r + 1) * n] == block for r in range(1, LOOP_REPEATS)):
                return True
    return False


def is_degenerate(text: str) -> bool:
    """A degenerate continuation: nearly empty or repetitive."""
    return is_nearly_empty(text) or is_repetitive(text)
