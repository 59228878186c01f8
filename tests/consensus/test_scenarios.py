"""Runs the scenario scripts in ``testdata/`` (``REWRITE=1`` regenerates their output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .datadriven import run_script
from .interaction import InteractionEnv

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_scenario(script: Path, tmp_path: Path) -> None:
    env = InteractionEnv(tmp_dir=tmp_path)
    try:
        run_script(script, env.handle)
    finally:
        env.close()


def test_every_script_cites_the_paper() -> None:
    assert SCRIPTS, "no scenario scripts found"
    for script in SCRIPTS:
        head = script.read_text().split("\n\n", 1)[0]
        assert "§" in head, f"{script.name} must cite the Raft paper/thesis section it checks"
