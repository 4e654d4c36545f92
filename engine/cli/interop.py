"""The interoperability commands: `export --format lm-eval`, `card`, `prefetch`, and the
`--log` option of `submit` (the handlers; `engine.cli.parser` wires them in)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import open_store
from engine.errors import UsageError
from engine.terminal_output import error, print_json, print_table
from engine.catalog.registry import Registry
from engine.cli.results import cmd_export as table_export
from engine.interop import prefetch
from engine.interop.lm_eval_format import export
from engine.interop.model_card import write_card
from engine.interop.model_results import one_model
from engine.model_refs import resolve
from engine.output_guard import check_folder, check_outputs, check_output
from engine.study_plan import load_study

TABLE_FORMATS = ("csv", "json", "md")           # one file: engine.cli.results.cmd_export


def _lm_eval_writer(store, folder: Path, run_ids, check=None):
    return export(store, folder, run_ids, check=check)


# formats that write one file per model into a folder: format -> writer(store, folder, runs,
# check), `check(paths)` raising before anything is written when a path is protected
FOLDER_FORMATS: Registry = Registry("export format", "format", instantiate=False)
FOLDER_FORMATS.register(_lm_eval_writer, name="lm-eval")
EXPORT_FORMATS = TABLE_FORMATS + tuple(FOLDER_FORMATS)


def cmd_export(args: argparse.Namespace) -> int:
    """`compfair export`: a folder format (lm-eval's results JSON, one per model, under the
    folder -o names), else the table formats of `engine.cli.results.cmd_export`."""
    writer = FOLDER_FORMATS.get(args.format)
    if writer is None:
        return table_export(args)
    if not args.output:
        raise UsageError(f"--format {args.format} writes one results file per model: give the "
                         "folder with -o DIR")
    folder = Path(args.output).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {args.output!r} is a file; --format {args.format} needs a folder")
    store = open_store(args)
    check_folder(store.home, folder)      # never inside the logs, checkpoints or a model's folder
    written = writer(store, folder, args.runs,
                     lambda paths: check_outputs(store.home, paths, option="-o"))
    if not written:
        sys.stderr.write("no finished runs to export\n")
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    return 0


def _model_id(store, ref: str) -> int:
    """A registered model by name, id (model:ID / job:ID) or anything `compfair submit` takes."""
    row = store.one("SELECT id FROM models WHERE name = ? ORDER BY id DESC LIMIT 1", (ref,))
    if row is not None:
        return row["id"]
    source = resolve(ref, store)
    if source.model_id is None:
        raise UsageError(f"model {ref!r} is not in the registry (it has no results yet); "
                         "see `compfair models`")
    return source.model_id


def cmd_card(args: argparse.Namespace) -> int:
    """`compfair card MODEL [-o PATH]`: write the model's Hugging Face model card."""
    store = open_store(args)
    model = one_model(store, _model_id(store, args.model))
    if args.output:
        target = Path(args.output).expanduser().resolve()
        if not target.parent.is_dir():
            raise UsageError(f"-o {args.output!r}: folder {str(target.parent)!r} does not exist")
    else:
        folder = model.model.get("path")
        if not folder or not Path(folder).is_dir() or model.model.get("origin") in ("hub", "builtin"):
            raise UsageError(f"model {args.model!r} has no folder of its own to write into "
                             f"(origin {model.model.get('origin')}); give -o PATH")
        target = Path(folder)
    card = target / "README.md" if target.is_dir() else target
    own = model.model.get("path")
    # the store, a log, another model's file or this model's weights: refused, one line;
    # the model's own README.md (the default target) is the card's place
    check_output(store.home, card, allow=[Path(own) / "README.md"] if own else ())
    sys.stdout.write(f"wrote {write_card(model, target)}\n")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """`compfair push MODEL --repo ID`: write the model card into the model's folder, then
    upload the folder to the hub with huggingface_hub (needs network and a token; not tested
    offline)."""
    from huggingface_hub import HfApi
    store = open_store(args)
    model = one_model(store, _model_id(store, args.model))
    folder = model.model.get("path")
    if not folder or not Path(folder).is_dir() or model.model.get("origin") in ("hub", "builtin"):
        raise UsageError(f"model {args.model!r} has no folder of its own to upload")
    write_card(model, Path(folder))
    api = HfApi()
    try:
        api.create_repo(args.repo, private=args.private, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=args.repo,
                                 commit_message=f"compfair: {model.name}")
    except Exception as exc:  # noqa: BLE001 - offline, no token, no rights: one line, exit 1
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        error(f"push of {folder} to {args.repo} failed: {first}")
        return 1
    sys.stdout.write(f"uploaded {folder} to {info}\n")
    return 0


def add_parsers(sub) -> None:
    """The `card`, `push` and `prefetch` commands."""
    p = sub.add_parser("card", help="write a Hugging Face model card (README.md) for a model")
    p.add_argument("model", help="registered model: its name, model:ID, job:ID or path")
    p.add_argument("-o", "--output", help="file or folder to write (default: the model's folder)")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("push", help="write the model card and upload the model folder to the hub")
    p.add_argument("model", help="registered model: its name, model:ID, job:ID or path")
    p.add_argument("--repo", required=True, help="hub repository id (owner/name)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("prefetch", help="download every hub model, data set and scorer weight a "
                                        "study needs (for a machine without network)")
    p.add_argument("study", help="preset name (quick, paper) or a .toml file")
    p.add_argument("--dry-run", action="store_true", help="list them, fetch nothing (no network)")
    p.add_argument("--required-only", action="store_true",
                   help="leave out what has an offline fallback (data 'auto', scorer 'auto')")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prefetch)


def cmd_prefetch(args: argparse.Namespace) -> int:
    """`compfair prefetch STUDY`: list (--dry-run) or download what the study needs."""
    plan = load_study(args.study)
    wanted = [n for n in prefetch.needs(plan) if not (args.required_only and n.optional)]
    rows = [{"kind": n.kind, "ref": n.ref, "config": n.config, "optional": n.optional,
             "cached": prefetch.is_cached(n), "needed_by": list(n.why)} for n in wanted]
    if args.dry_run:
        if args.json:
            print_json({"study": plan.name, "needs": rows})
        elif not rows:
            sys.stdout.write(f"study {plan.name} needs nothing from the network\n")
        else:
            print_table(["kind", "what", "", "cached", "needed by"],
                        [[r["kind"], n.title, "optional" if n.optional else "required",
                          "yes" if r["cached"] else "no",
                          n.why[0] + (f" and {len(n.why) - 1} more" if len(n.why) > 1 else "")]
                         for r, n in zip(rows, wanted)], title=f"what study {plan.name} needs")
        return 0
    for row, need in zip(rows, wanted):
        if row["cached"]:
            sys.stdout.write(f"cached  {need.kind} {need.title}\n")
            continue
        sys.stdout.write(f"fetched {need.kind} {need.title} -> {prefetch.fetch(need)}\n")
    return 0
