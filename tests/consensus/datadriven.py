"""A small datadriven test format (after cockroachdb/datadriven, used by etcd-io/raft).

A script is a sequence of blocks::

    # comments and blank lines between blocks are kept as they are
    command arg key=value ...
    ----
    expected output (ends at the first blank line)

``run_script(path, handler)`` runs each command through ``handler(command, args, kwargs)``
and compares its output (``ok`` when empty). With ``REWRITE=1`` in the environment the file
is rewritten with the actual outputs instead; review the diff before committing it.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SEPARATOR = "----"


@dataclass
class Block:
    line: int
    command_line: str
    expected: list[str]
    preamble: list[str]  # comment/blank lines before the command

    @property
    def parsed(self) -> tuple[str, list[str], dict[str, str]]:
        words = shlex.split(self.command_line, comments=False)
        args: list[str] = []
        kwargs: dict[str, str] = {}
        for w in words[1:]:
            if "=" in w and not w.startswith("="):
                k, v = w.split("=", 1)
                kwargs[k] = v
            else:
                args.append(w)
        return words[0], args, kwargs


def parse(text: str) -> tuple[list[Block], list[str]]:
    lines = text.splitlines()
    blocks: list[Block] = []
    pre: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            pre.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ValueError(f"line {i + 1}: command {line!r} is not followed by {SEPARATOR}")
        j = i + 2
        expected = []
        while j < len(lines) and lines[j].strip():
            expected.append(lines[j])
            j += 1
        blocks.append(Block(i + 1, line, expected, pre))
        pre = []
        i = j
    return blocks, pre


def run_script(path: Path, handler: Callable[[str, list[str], dict[str, str]], str]) -> None:
    text = path.read_text()
    blocks, trailer = parse(text)
    rewrite = os.environ.get("REWRITE") == "1"
    out_lines: list[str] = []
    failures: list[str] = []
    for b in blocks:
        cmd, args, kwargs = b.parsed
        actual = handler(cmd, args, kwargs).rstrip("\n") or "ok"
        actual_lines = [ln.rstrip() for ln in actual.splitlines()]
        if any(not ln.strip() for ln in actual_lines):
            raise AssertionError(f"{path.name}:{b.line}: output of {cmd!r} has a blank line")
        out_lines += b.preamble + [b.command_line, SEPARATOR] + actual_lines
        if actual_lines != b.expected and not rewrite:
            failures.append(_diff(path, b, actual_lines))
            break  # later blocks depend on this one
    if rewrite:
        path.write_text("\n".join(out_lines + trailer) + "\n")
        return
    if failures:
        raise AssertionError("\n".join(failures))


def _diff(path: Path, b: Block, actual: list[str]) -> str:
    import difflib

    diff = "\n".join(difflib.unified_diff(b.expected, actual, "expected", "actual",
                                          lineterm=""))
    return (f"{path.name}:{b.line}: output of `{b.command_line}` differs "
            f"(REWRITE=1 regenerates):\n{diff}")
