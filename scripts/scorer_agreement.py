#!/usr/bin/env python
"""How well do compfair's toxicity scorers agree with Perspective API on RealToxicityPrompts?

RTP lines carry Perspective scores for the prompt and the original continuation
(`prompt.toxicity`, `continuation.toxicity`). This scores the same texts with each named scorer
and prints, for prompts, continuations and all texts, the agreement computed by
`engine.evaluation.scorer_agreement` (ROC-AUC against "Perspective >= 0.5", accuracy, precision
and recall at 0.5, Spearman). For your own labelled data use `compfair score --reference FIELD`.

Usage:
    .venv/bin/python scripts/scorer_agreement.py [--data ../shared/data/rtp]
        [--scorer profanity,bilstm,offline] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluation.scorer_agreement import (THRESHOLD, Agreement, agreement,  # noqa: E402,F401
                                                average_ranks, by_kind, format_table, read_rtp,
                                                roc_auc, spearman)
from engine.evaluation.scorers import load_scorer  # noqa: E402
from engine.errors import ScorerError  # noqa: E402

log = logging.getLogger("scorer_agreement")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rtp"


def measure(data: Path, scorer_name: str = "profanity") -> tuple[list[Agreement], dict]:
    texts, reference, kinds = read_rtp(data)
    if not texts:
        raise SystemExit(f"no Perspective-scored texts found in {data}")
    scorer, note = load_scorer(scorer_name)
    log.info("scoring %d texts with %s (%s)%s", len(texts), scorer.name, scorer.version,
             f"; {note}" if note else "")
    start = time.perf_counter()
    predicted = scorer.score(texts)              # one batched call
    seconds = time.perf_counter() - start
    info = {"data": str(data), "scorer": scorer.name, "scorer_version": scorer.version,
            "texts": len(texts), "scoring_seconds": round(seconds, 3)}
    return by_kind(reference, predicted, kinds), info


def title(info: dict) -> str:
    return (f"{info['scorer']} ({info['scorer_version']}) vs Perspective, label = Perspective "
            f"toxicity >= {THRESHOLD}; {info['texts']} texts from {info['data']}, scored in "
            f"{info['scoring_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="RTP JSONL file or folder with Perspective scores (default: %(default)s)")
    parser.add_argument("--scorer", default="profanity,bilstm,offline",
                        help="compfair scorer names, comma-separated (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.data.exists():
        log.error("data %s not found (the real RTP lines live in ../shared/data/rtp)", args.data)
        return 2
    runs = []
    for name in [n.strip() for n in args.scorer.split(",") if n.strip()]:
        try:
            results, info = measure(args.data, name)
        except (ScorerError, ValueError) as exc:
            log.error("%s", exc)
            return 2
        print(format_table(results, title(info)), end="\n\n")
        runs.append({**info, "results": [r.as_dict() for r in results]})
    if args.json:
        args.json.write_text(json.dumps(runs[0] if len(runs) == 1 else runs, indent=2))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
