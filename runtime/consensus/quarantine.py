"""Where a replica keeps Raft data it cannot use, and the note that it rejoins empty.

Under the replica's directory::

    quarantine/<stamp>-<segment>-torn-at-<offset>   bytes of a torn tail cut from a segment
    quarantine/<stamp>-corrupt/                     hardstate, wal/, snap/ of a corrupt log
    REJOIN                                          JSON: this replica lost its log (below)

Nothing here is ever deleted by nborch: the user decides (see the README's Raft section).

``REJOIN`` is written before the corrupt files are moved and says where they go, so a crash
in the middle of the move is finished on the next open; it stays until a leader has caught
the replica up again (the Raft core's rejoin rule), and carries what the replica must not
forget meanwhile: the highest term it had seen, its vote in that term, and the highest index
it may have acknowledged.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .durable_files import atomic_write, fsync_dir, make_dir

QUARANTINE = "quarantine"
REJOIN = "REJOIN"
RAFT_FILES = ("hardstate", "wal", "snap")


@dataclass(frozen=True)
class Rejoin:
    """A replica whose log was quarantined as corrupt and which rejoins its group empty."""

    quarantined: str  # the folder holding the corrupt files
    reason: str  # the error the open raised
    term: int  # the highest term seen before the loss
    vote: int  # the vote cast in that term, if known (0 otherwise)
    until_commit: int  # the highest index it may have acknowledged before the loss
    corrupt_file: str = ""  # the file that failed its checks, where it is kept now
    moved: bool = False  # whether every file is in `quarantined` yet


def stamp() -> str:
    """A UTC timestamp for names, sortable, unique enough within one directory."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def keep_bytes(root: Path, name: str, data: bytes) -> Path:
    """Durably store ``data`` as ``quarantine/<stamp>-<name>``; returns its path."""
    folder = root / QUARANTINE
    make_dir(folder)
    path = folder / f"{stamp()}-{name}"
    atomic_write(path, data)
    return path


def listing(root: Path) -> tuple[str, ...]:
    folder = root / QUARANTINE
    return tuple(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else ()


def read_rejoin(root: Path) -> Rejoin | None:
    path = root / REJOIN
    try:
        return Rejoin(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc}); it marks a replica that lost its log: "
                         "keep it, and the quarantine folder, and see the docs") from exc


def write_rejoin(root: Path, rejoin: Rejoin) -> None:
    atomic_write(root / REJOIN, json.dumps(asdict(rejoin)).encode())


def remove_rejoin(root: Path) -> None:
    (root / REJOIN).unlink(missing_ok=True)
    fsync_dir(root)


def start_move(root: Path, rejoin_without_folder: Rejoin, corrupt: Path) -> Rejoin:
    """Record the intent (REJOIN names the destination), then move the Raft files there.
    ``corrupt`` is the file that failed its checks."""
    folder = root / QUARANTINE / f"{stamp()}-corrupt"
    try:
        kept = folder / corrupt.relative_to(root)
    except ValueError:
        kept = corrupt
    rejoin = replace(rejoin_without_folder, quarantined=str(folder), corrupt_file=str(kept),
                     moved=False)
    write_rejoin(root, rejoin)
    return finish_move(root, rejoin)


def finish_move(root: Path, rejoin: Rejoin) -> Rejoin:
    """Move whatever of the Raft files is still in place into the quarantine folder. Until
    REJOIN says ``moved``, nothing new is written, so anything left there is old."""
    if rejoin.moved:
        return rejoin
    folder = Path(rejoin.quarantined)
    make_dir(folder)
    for name in RAFT_FILES:
        if (root / name).exists() and not (folder / name).exists():
            os.rename(root / name, folder / name)
    fsync_dir(folder)
    fsync_dir(root)
    rejoin = replace(rejoin, moved=True)
    write_rejoin(root, rejoin)
    return rejoin
