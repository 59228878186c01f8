"""Re-execute tutorial notebooks and store their outputs (the reference `pytest --nbval`
compares against). Run after editing a notebook:

    python tests/notebooks/refresh_outputs.py notebooks/consensus.ipynb [more.ipynb ...]

Cells run top to bottom in a fresh kernel started in the notebook's folder; the notebook is
written back only if every cell succeeded. Widget state is not stored (it holds model ids and
PNG bytes that change on every run); the widgets' text/plain and text/html outputs are.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import nbformat
from nbclient import NotebookClient


def refresh(path: str, timeout: int = 120) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', store_widget_state=False,
                            resources={'metadata': {'path': os.path.dirname(os.path.abspath(path))}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    for cell in nb.cells:
        cell.get('metadata', {}).pop('execution', None)
    nb.metadata.pop('widgets', None)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('notebooks', nargs='+')
    parser.add_argument('--timeout', type=int, default=120, help='seconds per cell')
    args = parser.parse_args(argv)
    for path in args.notebooks:
        print(f'{path}: {refresh(path, args.timeout):.1f} s', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
