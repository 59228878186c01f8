"""The child side of the process contract (see runtime/process.py for the parent side).

Every nborch background process is started as `python -m nborch.runtime.<role>` with
`--ready-fd` (write one JSON line `{pid, port, ...}` when serving) and `--parent-fd` (the read
end of a pipe whose write end only the owner holds: EOF means the owner is gone, whatever
killed it, so the child exits at once).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--ready-fd', type=int, default=None)
    parser.add_argument('--parent-fd', type=int, default=None)


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
