"""Readers of the suites' data, files and hub rows alike, into items (`Prompt`, `SentencePair`)
or text, each refusing bad input with a one-line `DataError` naming the file, line and value.

Formats:

- RealToxicityPrompts: JSON lines, `{"prompt": {"text": ..., "toxicity": ...}, ...}`; a folder
  means every `*.jsonl` in it (sorted by name). A prompt is *toxic* when its (Perspective)
  prompt toxicity is >= 0.5; a prompt without a score is in neither split.
- BOLD: one JSON file per domain named `<domain>_prompt.json`, holding
  `{group: {entity: [prompt, ...]}}` (a folder of them, or a folder with a `prompts/` folder).
- CrowS-Pairs: CSV with columns `sent_more, sent_less, stereo_antistereo, bias_type`.
- Perplexity: one UTF-8 text file (wikitext-2-raw test split from the hub)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from engine.errors import DataError
from engine.evaluation.data import BOLD_DOMAINS, CROWS_COLUMNS, MAX_ITEM_CHARS, Prompt, SentencePair

_BOLD_FILE = re.compile(r"^(?P<domain>.+)_prompt\.json$")


# -- small helpers ---------------------------------------------------------------------------
def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (invalid byte at offset {exc.start})") from None


def _read_text_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _decode(raw, str(path))


def _files(path: Path, pattern: str, what: str) -> list[Path]:
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    found = sorted(p for p in path.glob(pattern) if p.is_file())
    if not found:
        raise DataError(f"data folder {str(path)!r} has no {what} files ({pattern})")
    return found


def check_length(text: str, where: str, what: str) -> None:
    """DataError when `text` (a prompt or sentence) is over MAX_ITEM_CHARS characters."""
    if len(text) > MAX_ITEM_CHARS:
        raise DataError(f"{where}: {what} is {len(text):,} characters, over the limit of "
                        f"{MAX_ITEM_CHARS:,} characters per prompt or sentence")


# -- RealToxicityPrompts -------------------------------------------------------------------
def _rtp_prompt(record: Any, where: str, index: int) -> Prompt:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    prompt = record.get("prompt")
    if not isinstance(prompt, dict):
        raise DataError(f"{where}: missing field 'prompt' (an object with 'text' and 'toxicity')")
    text = prompt.get("text")
    if not isinstance(text, str):
        raise DataError(f"{where}: missing field 'prompt.text'")
    if not text.strip():
        raise DataError(f"{where}: empty 'prompt.text'")
    check_length(text, where, "'prompt.text'")
    toxicity = prompt.get("toxicity")
    if toxicity is not None:
        if isinstance(toxicity, bool) or not isinstance(toxicity, (int, float)) \
                or not 0.0 <= float(toxicity) <= 1.0:
            raise DataError(f"{where}: 'prompt.toxicity' must be a number in [0, 1], got {toxicity!r}")
        toxicity = float(toxicity)
    return Prompt(index=index, text=text, toxicity=toxicity)


def read_rtp(path: Path) -> list[Prompt]:
    """RTP JSON lines from a file, or from every *.jsonl in a folder (sorted by name)."""
    prompts: list[Prompt] = []
    for file in _files(Path(path), "*.jsonl", "RealToxicityPrompts JSONL"):
        try:
            raw_lines = file.read_bytes().splitlines()
        except OSError as exc:
            raise DataError(f"cannot read {file}: {exc.strerror or exc}") from None
        for number, raw in enumerate(raw_lines, start=1):
            where = f"{file}, line {number}"
            line = _decode(raw, where).strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise DataError(f"{where}: JSON nested too deeply to read") from None
            prompts.append(_rtp_prompt(record, where, len(prompts)))
    if not prompts:
        raise DataError(f"no prompts in {path}")
    return prompts


def rtp_from_records(records: Iterable[dict], origin: str) -> list[Prompt]:
    """RTP prompts from already-parsed records (the hub data set's rows)."""
    prompts = [_rtp_prompt(r, f"{origin}, row {i}", i) for i, r in enumerate(records)]
    if not prompts:
        raise DataError(f"no prompts in {origin}")
    return prompts


# -- BOLD ------------------------------------------------------------------------------------
def _domain_order(domain: str) -> tuple[int, str]:
    return (BOLD_DOMAINS.index(domain) if domain in BOLD_DOMAINS else len(BOLD_DOMAINS), domain)


def _bold_prompts(by_domain: dict[str, Any], origin: str) -> list[Prompt]:
    """Flatten {domain: {group: {entity: [prompt]}}} in canonical order into indexed prompts."""
    prompts: list[Prompt] = []
    for domain in sorted(by_domain, key=_domain_order):
        groups = by_domain[domain]
        if not isinstance(groups, dict):
            raise DataError(f"{origin}: domain {domain!r} must map groups to entities")
        for group, entities in groups.items():
            if not isinstance(entities, dict):
                raise DataError(f"{origin}: group {group!r} must map entity names to prompt lists")
            for entity, texts in entities.items():
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    raise DataError(f"{origin}: entity {entity!r} in group {group!r} must have a list of prompt strings")
                for number, text in enumerate(texts, start=1):
                    check_length(text, f"{origin}: domain {domain!r}, group {group!r}, entity "
                                       f"{entity!r}, prompt {number}", "the prompt")
                    if text.strip():
                        prompts.append(Prompt(index=len(prompts), text=text, domain=domain, group=group))
    if not prompts:
        raise DataError(f"no prompts in {origin}")
    return prompts


def _check_bold_lengths(groups: dict, origin: str) -> None:
    """check_length for every prompt of one BOLD file ({group: {entity: [prompt]}}), naming
    the file, group, entity and the prompt's position; the shape is checked by _bold_prompts."""
    for group, entities in groups.items():
        for entity, texts in (entities.items() if isinstance(entities, dict) else ()):
            for number, text in enumerate(texts if isinstance(texts, list) else (), start=1):
                if isinstance(text, str):
                    check_length(text, f"{origin}: group {group!r}, entity {entity!r}, prompt {number}",
                                 "the prompt")


def read_bold(path: Path) -> list[Prompt]:
    """BOLD prompts from `<domain>_prompt.json` files (a file, a folder of them, or a folder
    whose `prompts/` subfolder holds them)."""
    path = Path(path)
    if path.is_dir() and not any(path.glob("*_prompt.json")) and (path / "prompts").is_dir():
        path = path / "prompts"
    by_domain: dict[str, Any] = {}
    for file in _files(path, "*_prompt.json", "BOLD <domain>_prompt.json"):
        match = _BOLD_FILE.match(file.name)
        if not match:
            raise DataError(f"BOLD file {str(file)!r} is not named <domain>_prompt.json")
        try:
            content = json.loads(_read_text_file(file))
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DataError(f"{file}: JSON nested too deeply to read") from None
        if not isinstance(content, dict):
            raise DataError(f"{file}: expected {{group: {{entity: [prompts]}}}}, got {type(content).__name__}")
        _check_bold_lengths(content, str(file))         # naming the file
        by_domain[match["domain"]] = content
    return _bold_prompts(by_domain, str(path))


def bold_from_records(records: Iterable[dict], origin: str) -> list[Prompt]:
    """BOLD prompts from the hub's rows (`domain, name, category, prompts`)."""
    by_domain: dict[str, dict[str, dict[str, list[str]]]] = {}
    for i, row in enumerate(records):
        try:
            domain, group, entity, texts = row["domain"], row["category"], row["name"], row["prompts"]
        except KeyError as exc:
            raise DataError(f"{origin}, row {i}: missing field {exc.args[0]!r}") from None
        by_domain.setdefault(domain, {}).setdefault(group, {}).setdefault(entity, []).extend(texts)
    return _bold_prompts(by_domain, origin)


def select_bold(prompts: list[Prompt], domains: Sequence[str], groups: Sequence[str],
                prompts_per_group: int | None, seed: int, origin: str) -> list[Prompt]:
    """Keep the asked-for domains and groups; cap each group at `prompts_per_group` (a seeded
    sample). Unknown domains or groups raise DataError naming them."""
    available_domains = sorted({p.domain for p in prompts}, key=_domain_order)
    for domain in domains:
        if domain not in available_domains:
            raise DataError(f"BOLD domain {domain!r} has no prompts in {origin} "
                            f"(available: {', '.join(available_domains)})")
    if domains:
        prompts = [p for p in prompts if p.domain in domains]
    available_groups = list(dict.fromkeys(p.group for p in prompts))
    for group in groups:
        if group not in available_groups:
            shown = ", ".join(available_groups[:12]) + (", ..." if len(available_groups) > 12 else "")
            raise DataError(f"BOLD group {group!r} is unknown in {origin}"
                            f"{' for domains ' + ', '.join(domains) if domains else ''} (available: {shown})")
    if groups:
        prompts = [p for p in prompts if p.group in groups]
    if prompts_per_group is not None:
        by_group: dict[tuple[str, str], list[Prompt]] = {}
        for p in prompts:
            by_group.setdefault((p.domain, p.group), []).append(p)
        kept: list[Prompt] = []
        for number, key in enumerate(sorted(by_group)):
            members = by_group[key]
            if len(members) > prompts_per_group:
                rng = np.random.default_rng([seed, number])
                picks = sorted(rng.choice(len(members), size=prompts_per_group, replace=False))
                members = [members[i] for i in picks]
            kept.extend(members)
        prompts = sorted(kept, key=lambda p: p.index)
    return prompts


# -- CrowS-Pairs -----------------------------------------------------------------------------
def _pair(row: dict, where: str, index: int) -> SentencePair:
    values = {}
    for column in CROWS_COLUMNS:
        value = row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: missing or empty {column!r}")
        values[column] = str(value).strip()
        if column in ("sent_more", "sent_less"):
            check_length(values[column], where, repr(column))
    if values["stereo_antistereo"] not in ("stereo", "antistereo"):
        raise DataError(f"{where}: stereo_antistereo must be 'stereo' or 'antistereo', "
                        f"got {values['stereo_antistereo']!r}")
    return SentencePair(index=index, sent_more=values["sent_more"], sent_less=values["sent_less"],
                        direction=values["stereo_antistereo"], bias_type=values["bias_type"])


def _csv_problem(file: Path, line: int, exc: csv.Error) -> str:
    """One line for a CSV the csv module cannot read: a field over its size limit (131,072
    characters: far beyond any sentence pair, so the file is not one, and reading on would only
    fill memory) or malformed quoting."""
    text = str(exc)
    if "field larger than field limit" in text:
        return (f"{file}, line {line}: a field is larger than the CSV field limit "
                f"({csv.field_size_limit():,} characters); a CrowS-Pairs sentence is far shorter")
    return f"{file}, line {line}: not valid CSV ({text})"


def read_crows_pairs(path: Path) -> list[SentencePair]:
    """CrowS-Pairs from its CSV (a file, or a folder holding one or more *.csv)."""
    pairs: list[SentencePair] = []
    for file in _files(Path(path), "*.csv", "CrowS-Pairs CSV"):
        reader = csv.DictReader(io.StringIO(_read_text_file(file), newline=""))
        try:
            missing = [c for c in CROWS_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{file}: missing column {missing[0]!r} (needs {', '.join(CROWS_COLUMNS)})")
            for row in reader:
                pairs.append(_pair(row, f"{file}, line {reader.line_num}", len(pairs)))
        except csv.Error as exc:
            raise DataError(_csv_problem(file, reader.reader.line_num, exc)) from None
    if not pairs:
        raise DataError(f"no sentence pairs in {path}")
    return pairs


def crows_from_records(records: Iterable[dict], origin: str,
                       label_names: dict[str, Sequence[str]] | None = None) -> list[SentencePair]:
    """Pairs from hub rows; `label_names` maps class-label columns to their names."""
    label_names = label_names or {}
    pairs = []
    for i, row in enumerate(records):
        row = dict(row)
        for column, names in label_names.items():
            if isinstance(row.get(column), int):
                row[column] = names[row[column]]
        pairs.append(_pair(row, f"{origin}, row {i}", i))
    if not pairs:
        raise DataError(f"no sentence pairs in {origin}")
    return pairs


# -- perplexity text ---------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """A UTF-8 text file, whole."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_dir():
        raise DataError(f"perplexity data {str(path)!r} is a folder; give a text file")
    text = _read_text_file(path)
    if not text.strip():
        raise DataError(f"perplexity text {str(path)!r} is empty")
    return text
