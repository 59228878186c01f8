"""The child side of the process contract (see runtime/process.py for the parent side).

Every nborch background process is started as `python -m nborch.runtime.<role>` with
`--ready-fd` (write one JSON line `{pid, port, ...}` when serving) and `--parent-fd` (the read
end of a pipe whose write end only the owner holds: EOF means the owner is gone, whatever
killed it, so the child exits at once), and `--secret-fd` (a pipe holding the deployment
secret, runtime/auth.py; without it the child's links are not authenticated).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from typing import Iterable, NoReturn

EXIT_REASON = 'nborch: exit: '
"""Starts the last line a process prints when it ends itself; its owner shows that line."""
FAILED = 3
"""The exit status of a process that ended itself because it can no longer serve."""


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--ready-fd', type=int, default=None)
    parser.add_argument('--parent-fd', type=int, default=None)
    parser.add_argument('--secret-fd', type=int, default=None)


def enter_role(args: argparse.Namespace) -> None:
    """What every runtime process does first: die with its owner, keep its files private,
    take the deployment secret."""
    watch_parent(args.parent_fd)
    keep_files_private()
    if args.secret_fd is not None:
        from nborch.runtime import auth
        auth.install(auth.LinkAuth(auth.read_secret_fd(args.secret_fd)))


def keep_files_private() -> None:
    """Files and folders this process makes (Raft logs, hard state, snapshots, the executor's
    own files) are its user's alone: 0600 / 0700. They hold the posted docs in clear."""
    os.umask(0o077)


def watch_parent(fd: int | None) -> None:
    """Exit the process as soon as the owner's end of the death pipe closes."""
    if fd is None:
        return

    def wait_for_eof() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        os._exit(0)  # the owner is gone: nobody is left to answer to

    threading.Thread(target=wait_for_eof, name='nborch-parent-watch', daemon=True).start()


def report_ready(fd: int | None, **info) -> None:
    """Tell the owner this process serves (one JSON line), then close the pipe."""
    line = json.dumps({'pid': os.getpid(), **info}) + '\n'
    if fd is None:
        print(line, end='', flush=True)
        return
    with os.fdopen(fd, 'w') as ready:
        ready.write(line)


def configure_logging(level: str = 'INFO') -> None:
    """Log lines look like the reference system's: `INFO   indexer/rep-0@902 message`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('%(levelname)-6s %(name)s@%(process)d %(message)s'))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def exit_because(reason: str) -> NoReturn:
    """End this process with status `FAILED` and, as its last line, why (see `exit_reason`)."""
    sys.stdout.write(f'{EXIT_REASON}{reason}\n')
    sys.stdout.flush()
    sys.exit(FAILED)


def exit_reason(lines: Iterable[str]) -> str | None:
    """The reason a process gave with `exit_because`, found in its last output lines."""
    for line in reversed(list(lines)):
        if line.startswith(EXIT_REASON):
            return line[len(EXIT_REASON):].strip()
    return None
