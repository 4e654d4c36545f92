"""One sampling step: a token per row drawn from softmax(logits / temperature) restricted to
the top-p nucleus, by inverse-CDF sampling with a uniform number from the row's own random
stream (`row_uniforms`: seeded by (seed, item, sample), so a sample does not depend on the
rows that share its batch)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

Row = tuple[int, int]          # (item index, sample index)


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
    logits = logits.float()
    probs = torch.softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
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
