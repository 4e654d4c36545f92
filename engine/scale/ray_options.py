"""What `compfair worker --ray [ADDRESS]` checks before it opens or starts anything: that Ray
is installed and that the address is one (and answers). Torch-free and Ray-free at import, so
bad input fails in a moment."""

from __future__ import annotations

import re
import socket

from engine.errors import UserError

CONNECT_TIMEOUT_S = 5.0             # a cluster address that does not answer this soon is refused
ADDRESS_RE = re.compile(r"^(ray://)?[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
ACCEPTED = "auto, HOST:PORT (the head node's GCS port, 6379 by default) or ray://HOST:PORT"


def import_ray():
    """The ray module, or UserError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UserError(f"--ray: Ray is not installed ({exc}); install the extra: "
                        "pip install 'compfair[ray]'") from exc
    return ray


def check_address(address: str | None) -> None:
    """UserError naming `address` unless it is well formed and (HOST:PORT) answers."""
    if address is None or address == "auto":
        return
    if not ADDRESS_RE.match(address):
        raise UserError(f"--ray {address!r} is not a cluster address; give {ACCEPTED}, or "
                        "nothing for a local cluster")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        raise UserError(f"--ray {address!r}: no Ray cluster answers there ({exc}); start one "
                        "with `ray start --head` or give its address") from exc
