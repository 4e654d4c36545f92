"""`compfair score`: score texts with any toxicity scorer, and optionally judge the scorer
against a reference score column.

    compfair score texts.txt                                  # one text per line
    cat texts.txt | compfair score --scorer profanity --json  # stdin
    compfair score rtp.jsonl --field prompt.text --reference prompt.toxicity
    compfair score labelled.csv --field comment --reference toxicity --output scores.csv

Input: a file or stdin (`-`). Plain text is one text per line (blank lines skipped); JSONL
(`.jsonl`/`.ndjson`/`.json`) and CSV (`.csv`) need `--field`, the text's key (dotted for nested
JSON, e.g. `prompt.text`) or column; from stdin with `--field`, a first character `{` means JSONL,
else CSV; `--format` says it outright.

Output: CSV (`line,score[,reference][,details],text`; `line` is the input line or CSV row) on
stdout or `--output`, or with `--json` one JSON document with the scorer's name and version,
every score and the agreement. `--reference FIELD` adds the agreement of the scores with that
column (label = reference >= 0.5; rows without a reference are left out and counted): ROC-AUC,
accuracy/precision/recall at 0.5, Spearman (`engine.evaluation.scorer_agreement`). It goes to
stderr so stdout stays machine-readable (to stdout when the scores go to `--output`).

Bad input (missing file, a field that is absent, a reference that is not a number, an unknown
scorer) prints one line and exits with 2."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

from engine.errors import ProtectedPath, ScoreInputError, ScorerError, UserError, first_line
from engine.evaluation.scorer_agreement import THRESHOLD, agreement, format_table
from engine.evaluation.scorers import load_scorer
from engine.output_guard import check_output, home_of
from engine.terminal_output import error, json_safe

FORMATS = ("auto", "lines", "jsonl", "csv")


@dataclass
class ScoreInput:
    texts: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)            # input line (or CSV row) numbers
    references: list[float | None] = field(default_factory=list)


def add_parser(subparsers) -> None:
    """Add `score` to the CLI's subparsers (its handler is `run`, set as `func`)."""
    p = subparsers.add_parser("score", help="score texts (file or stdin) with a toxicity scorer; "
                                            "--reference FIELD: agreement with a reference score",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="?", default="-", help="a text, JSONL or CSV file; - or absent: stdin")
    p.add_argument("--field", help="JSONL key (dotted for nested: prompt.text) or CSV column of the text")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="input format (default: by file suffix; stdin: lines, or JSONL/CSV with --field)")
    p.add_argument("--scorer", default="auto",
                   help="auto, offline, bilstm, profanity, detoxify[:variant or checkpoint], hf:<id or folder>")
    p.add_argument("--scorer-label", help="the class to read (detoxify and hf: scorers)")
    p.add_argument("--device", default="cpu", help="torch device for model scorers (default: cpu)")
    p.add_argument("--reference", metavar="FIELD",
                   help="a reference score key/column: print agreement (label = reference >= 0.5)")
    p.add_argument("--details", action="store_true", help="every class probability the scorer gives")
    p.add_argument("--json", action="store_true", help="one JSON document instead of CSV")
    p.add_argument("--output", "-o", type=Path, help="write the scores here instead of stdout")


# -- reading --------------------------------------------------------------------------------------
def _lookup(record: Any, dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in nested dicts; the whole key is tried first."""
    if isinstance(record, dict) and dotted in record:
        return True, record[dotted]
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _reference_value(value: Any, where: str, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ScoreInputError(f"{where}: reference {name!r} is {value!r}, not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ScoreInputError(f"{where}: reference {name!r} is {str(value)[:40]!r}, not a number") from None
    return None if math.isnan(number) else number


def detect_format(source: str, requested: str, text_field: str | None, head: str) -> str:
    if requested != "auto":
        return requested
    suffix = Path(source).suffix.lower() if source != "-" else ""
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if text_field and source == "-":
        return "jsonl" if head.lstrip().startswith("{") else "csv"
    return "lines"


def read_input(handle: TextIO, fmt: str, text_field: str | None, reference: str | None,
               label: str = "input") -> ScoreInput:
    """Texts (and references) from `handle` in format `fmt` (lines, jsonl or csv)."""
    out = ScoreInput()
    if fmt == "lines":
        if text_field:
            raise ScoreInputError("--field applies to JSONL or CSV input; this is plain text "
                                  "(use --format jsonl or csv)")
        if reference:
            raise ScoreInputError("--reference needs JSONL or CSV input with --field")
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                out.texts.append(text)
                out.lines.append(number)
                out.references.append(None)
        return out
    if not text_field:
        raise ScoreInputError(f"--field is needed for {fmt.upper()} input (the text's key or column)")
    if fmt == "jsonl":
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{label}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ScoreInputError(f"{where}: not valid JSON ({exc.msg})") from None
            found, text = _lookup(record, text_field)
            if not found:
                raise ScoreInputError(f"{where}: no field {text_field!r}")
            if not isinstance(text, str):
                raise ScoreInputError(f"{where}: field {text_field!r} is {type(text).__name__}, not text")
            ref = None
            if reference:
                ref = _reference_value(_lookup(record, reference)[1], where, reference)
            out.texts.append(text)
            out.lines.append(number)
            out.references.append(ref)
        return out
    if fmt == "csv":
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for name in [text_field] + ([reference] if reference else []):
            if name not in columns:
                raise ScoreInputError(f"{label}: no column {name!r} (columns: {', '.join(columns) or 'none'})")
        try:
            for number, row in enumerate(reader, start=1):
                text = row.get(text_field)
                out.texts.append(text if isinstance(text, str) else "")
                out.lines.append(number)
                out.references.append(_reference_value(row.get(reference), f"{label}, row {number}",
                                                       reference) if reference else None)
        except csv.Error as exc:
            raise ScoreInputError(f"{label}: not valid CSV ({exc})") from None
        return out
    raise ScoreInputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _open_source(source: str) -> tuple[TextIO, str, bool]:
    if source == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="strict",
                                newline=""), "stdin", False
    path = Path(source).expanduser()
    if not path.is_file():
        raise ScoreInputError(f"input file {source} does not exist" if not path.exists()
                              else f"input {source} is not a file")
    return open(path, encoding="utf-8-sig", newline=""), str(path), True


def load_input(source: str, fmt: str, text_field: str | None, reference: str | None) -> ScoreInput:
    handle, label, close = _open_source(source)
    try:
        content = handle.read()
    except UnicodeDecodeError as exc:
        raise ScoreInputError(f"{label} is not UTF-8 text (byte {exc.start})") from None
    finally:
        if close:
            handle.close()
        else:
            handle.detach()                   # leave sys.stdin's buffer open
    chosen = detect_format(source, fmt, text_field, content[:200])
    data = read_input(io.StringIO(content, newline=None) if chosen != "csv" else io.StringIO(content, newline=""),
                      chosen, text_field, reference, label)
    if not data.texts:
        raise ScoreInputError(f"{label}: no texts to score")
    return data


# -- writing --------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _rows(data: ScoreInput, scores, details, with_reference: bool) -> list[list[Any]]:
    detail_keys = list(details[0]) if details else []
    rows = []
    for i, text in enumerate(data.texts):
        row = [data.lines[i], _fmt(float(scores[i]))]
        if with_reference:
            row.append(_fmt(data.references[i]))
        row += [_fmt(details[i][k]) for k in detail_keys]
        rows.append(row + [text])
    return [["line", "score"] + (["reference"] if with_reference else []) + detail_keys + ["text"]] + rows


def run(args: argparse.Namespace) -> int:
    """`compfair score`; returns the exit code (2 with one line on stderr for bad input)."""

    try:
        if args.output:      # never the store, a log or a model's file (engine.output_guard)
            check_output(home_of(args), args.output, option="--output")
        data = load_input(args.input, args.format, args.field, args.reference)
        scorer, note = load_scorer(args.scorer, label=args.scorer_label, device=args.device)
    except (ScoreInputError, ScorerError, ProtectedPath, OSError) as exc:
        _error(exc)
        return 2
    if note:
        print(note, file=sys.stderr)
    if args.details:
        details = scorer.score_details(data.texts)
        scores = [row[scorer.key] for row in details]
    else:
        details = None
        scores = [float(v) for v in scorer.score(data.texts)]

    result = None
    if args.reference:
        kept = [i for i, ref in enumerate(data.references) if ref is not None]
        missing = len(data.texts) - len(kept)
        result = agreement("all", [data.references[i] for i in kept], [scores[i] for i in kept])
        summary = format_table([result], f"{scorer.name} ({scorer.version}) vs {args.reference}, "
                                         f"label = {args.reference} >= {THRESHOLD}; {len(kept)} texts"
                                         + (f" ({missing} without a reference left out)" if missing else ""))
    with_reference = bool(args.reference)
    try:
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
    except OSError as exc:
        _error(exc)
        return 2
    try:
        if args.json:
            doc = {"scorer": scorer.name, "scorer_version": scorer.version, "note": note or None,
                   "texts": len(data.texts),
                   "results": [{"line": data.lines[i], "score": float(scores[i]), "text": data.texts[i],
                                **({"reference": data.references[i]} if with_reference else {}),
                                **({"details": details[i]} if details else {})}
                               for i in range(len(data.texts))]}
            if result is not None:
                doc["agreement"] = {"reference": args.reference, "threshold": THRESHOLD,
                                    "without_reference": missing, **result.as_dict()}
            out.write(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
        else:
            csv.writer(out, lineterminator="\n").writerows(_rows(data, scores, details, with_reference))
    finally:
        if args.output:
            out.close()
    if result is not None and not args.json:
        print(summary, file=sys.stdout if args.output else sys.stderr)
    elif result is not None and args.output:
        print(summary)
    return 0


def _error(exc: BaseException) -> None:
    error(first_line(exc, 300))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m engine.cli.score ...` (the same as `compfair score ...`)."""
    parser = argparse.ArgumentParser(prog="compfair score", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
