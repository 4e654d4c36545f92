"""`compfair worker --devices ...` (one detached worker per device) and `compfair workers`
(each live worker with its device, status, current job, progress and memory)."""

from __future__ import annotations

import argparse
import sys

from engine.cli.common import open_store
from engine.formatting import fmt_bytes
from engine.terminal_output import error, print_json, print_table
from engine.paths import Home
from engine.errors import UserError
from engine.scale.device_workers import parse_devices, start_device_workers
from engine.scale.ray_options import check_address, import_ray
from engine.scale.worker_view import worker_views


def cmd_worker_devices(args: argparse.Namespace) -> int:
    """Start one detached worker per device of `--devices`; prints each worker and device."""
    devices = parse_devices(args.devices)     # a bad value: exit 2, nothing started
    open_store(args, write=True).close()      # the store exists (and is migrated) first
    started = start_device_workers(Home.resolve(args.home), devices, once=args.once,
                                   idle_exit_s=args.idle_exit)
    for w in started:
        sys.stdout.write(f"worker {w.worker_id} (pid {w.pid}) on {w.device}\n")
    return 0


def cmd_worker_ray(args: argparse.Namespace) -> int:
    """Run jobs from the queue as Ray tasks, this process the driver (exit 2 when Ray is
    missing or the address or options are bad; exit 1 when it stopped early)."""
    import logging
    address = None if args.ray in (None, "local") else args.ray
    if args.devices is not None:
        raise UserError("--ray and --devices exclude each other: Ray places the tasks on its "
                        "nodes' devices; give one of them")
    if args.ray is None:
        raise UserError(f"--ray-cpus {args.ray_cpus} needs --ray (a local cluster)")
    if args.ray_cpus is not None and (address is not None or args.ray_cpus < 1):
        raise UserError(f"--ray-cpus {args.ray_cpus}: give a positive number, and only for the "
                        "local cluster of --ray without an address")
    import_ray()
    check_address(address)                    # before anything is opened or started
    open_store(args, write=True).close()      # the store exists (and is migrated) first
    from engine.scale.ray_driver import RayWorker  # on use: torch
    logging.getLogger().setLevel(logging.INFO)
    worker = RayWorker(Home.resolve(args.home), address=address, cpus=args.ray_cpus,
                       once=args.once, idle_exit_s=None if args.once else args.idle_exit)
    worker.run()
    if worker.stop_reason:
        error(f"worker stopped: {worker.stop_reason}")
        return 1
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    """List the live workers."""
    views = worker_views(open_store(args))
    if args.json:
        print_json([v.to_dict() for v in views])
        return 0
    print_table(["worker", "device", "status", "job", "progress", "memory", "gpu memory"], [
        (v.worker_id, v.device or "-", v.status,
         f"{v.job_id} {v.job}" if v.job_id else "-",
         f"{100 * (v.progress or 0):.0f}% {v.message or ''}".strip() if v.job_id else "-",
         fmt_bytes(v.rss_bytes) if v.rss_bytes else "-",
         fmt_bytes(v.gpu_bytes) if v.gpu_bytes else "-") for v in views],
        title=f"{len(views)} live worker{'s' if len(views) != 1 else ''}")
    return 0


def add_parsers(sub) -> None:
    """The `workers` command (the `worker` command's --devices is added by the parser)."""
    p = sub.add_parser("workers", help="live workers: device, status, current job, progress, memory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workers)
