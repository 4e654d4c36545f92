"""Layer 5 (evaluation): where a suite's evaluation data comes from, and the selection of its items.

Sources (`EvalSpec.data`):

- "auto": the hub data set when the hub answers quickly (or is cached in offline mode),
  otherwise the small sets compfair ships in `data/prompts/`; the returned `note` says which
  fallback was taken and why.
- "builtin": the shipped sets.
- "hub": the hub data set or a `DataError`.
- a path: a local file or folder in the data set's original format (read by the suite,
  through the format loaders of `engine.evaluation.dataset_readers`).

Also the offline status of each suite's data, checked without network (`compfair doctor`,
study planning).

Functions take the suite object (a caller holding one passes it); a name is looked up in the
catalog (`engine.catalog`, layer 3), which returns the implementation once
`engine.evaluation.suites` is imported. This module never imports a suite."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from engine.catalog.suite_info import get_suite_info, suites
from engine.errors import SpecError
from engine.evaluation.data import BUILTIN_DIR, DataError, SuiteData, stratified_subset

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0


# -- the hub -------------------------------------------------------------------------------------
def hub_offline() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether the hub answers within `timeout` (any HTTP answer counts); with the reason."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True, ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"the hub ({endpoint}) is unreachable: {reason}"
    return True, ""


def _suite(suite):
    """The registered suite object for a name (or the object itself)."""
    if isinstance(suite, str):
        try:
            return get_suite_info(suite)
        except SpecError as exc:
            raise DataError(str(exc)) from None
    return suite


def _load_hub(suite) -> tuple[Any, str]:
    """The suite's hub data set (or its local cache in offline mode), and its name."""
    if suite.hub_dataset is None:
        raise DataError(f"suite {suite.name!r} has no hub data set")
    name, config, split = suite.hub_dataset
    if not hub_offline():
        ok, reason = hub_reachable()
        if not ok:
            raise DataError(reason)
    try:
        import datasets
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - offline, missing, renamed: all one-line reasons
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(f"hub data set {name} cannot be loaded: {first}") from None
    return dataset, f"hub:{name}" + (f"/{config}" if config else "") + f" ({split})"


def _from_hub(suite) -> tuple[list, str | None, str]:
    dataset, source = _load_hub(suite)
    items, text = suite.from_hub(dataset, source)
    return items, text, source


def _from_builtin(suite) -> tuple[list, str | None, str]:
    path = BUILTIN_DIR / suite.builtin_file
    if not suite.builtin_file or not path.exists():
        raise DataError(f"compfair's built-in {suite.name} set is missing ({path}); reinstall compfair")
    items, text = suite.read_path(path)
    return items, text, f"builtin:{path.relative_to(BUILTIN_DIR.parent.parent)}"


def load_suite_data(suite, data: str = "auto", *, max_prompts: int | None = None,
                    domains: Sequence[str] = (), groups: Sequence[str] = (),
                    prompts_per_group: int | None = None, seed: int = 0) -> SuiteData:
    """Load and select the items of `suite` (a registered suite or its name) from `data`
    ("auto", "builtin", "hub" or a path).

    Selection: the suite's own first (BOLD keeps `domains`/`groups` and caps
    `prompts_per_group`); then `max_prompts` caps the items, stratified by the suite's strata
    (RTP: toxic/non-toxic/unscored; BOLD: by group; CrowS: by bias type) and seeded.
    Perplexity text is not capped."""
    suite = _suite(suite)
    note = ""
    if data == "auto":
        try:
            items, text, source = _from_hub(suite)
            mode = "hub"
        except DataError as exc:
            items, text, source = _from_builtin(suite)
            mode = "builtin"
            note = f"using the built-in set because {exc}"
            log.info("%s data: %s", suite.name, note)
    elif data == "builtin":
        items, text, source = _from_builtin(suite)
        mode = "builtin"
    elif data == "hub":
        items, text, source = _from_hub(suite)
        mode = "hub"
    else:
        path = Path(data).expanduser()
        items, text = suite.read_path(path)
        mode, source = "path", f"path:{path.resolve()}"
    result = SuiteData(suite=suite.name, mode=mode, source=source, items=items, text=text, note=note,
                       n_available=len(items) if text is None else len(text))
    result.items = suite.select(result.items, Selection(domains, groups, prompts_per_group, seed), source)
    if max_prompts is not None and result.items:
        strata = [suite.stratum(item) for item in result.items]
        keep = stratified_subset(strata, max_prompts, seed)
        result.items = [result.items[i] for i in keep]
    if text is None and not result.items:
        raise DataError(f"the {suite.name} selection from {source} is empty")
    return result


@dataclass(frozen=True)
class Selection:
    """The selection settings of an eval spec that a suite's `select` may use."""

    domains: Sequence[str] = ()
    groups: Sequence[str] = ()
    prompts_per_group: int | None = None
    seed: int = 0


# -- offline status (for `compfair doctor` and study planning; never touches the network) -------
def hub_cached(suite) -> bool:
    """Whether the suite's hub data set is in a local Hugging Face cache (hub or datasets)."""
    suite = _suite(suite)
    if suite.hub_dataset is None:
        return False
    name = suite.hub_dataset[0]
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")).expanduser()
    return (hub_cache / f"datasets--{name.replace('/', '--')}").is_dir() or \
        any(datasets_cache.glob(f"{name.replace('/', '___')}*"))


def data_requirement(suite, data: str) -> str:
    """What loading `data` for `suite` needs that this machine may lack, or "" when it is all
    local. Checked without network."""
    try:
        suite = _suite(suite)
    except DataError as exc:
        return str(exc)
    own = suite.offline_requirement(data)
    if own is not None:
        return own
    hub_name = suite.hub_dataset[0] if suite.hub_dataset else "(none)"
    if data == "builtin":
        return ""
    if data == "auto":
        return "" if hub_cached(suite) else (f"hub data set {hub_name} is not cached: needs network, "
                                             "else the small built-in set is used")
    if data == "hub":
        return "" if hub_cached(suite) else f"needs network: hub data set {hub_name} is not cached"
    path = Path(data).expanduser()
    return "" if path.exists() else f"path {str(path)!r} does not exist"


def offline_datasets() -> dict[str, str]:
    """Per suite with data of its own (a built-in set or a hub set; not lm-eval, whose tasks
    bring theirs), what is available without network."""
    out = {}
    for suite in suites():
        if not (suite.builtin_file or suite.hub_dataset):
            continue
        builtin = "built-in set" if (BUILTIN_DIR / suite.builtin_file).exists() else "built-in set MISSING"
        hub = suite.hub_dataset[0] if suite.hub_dataset else "no hub set"
        out[suite.name] = f"{builtin}; hub {hub} {'cached' if hub_cached(suite) else 'not cached'}"
    return out
