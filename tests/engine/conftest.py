"""The engine tier: exported stacks deployed on a real Docker engine (Compose and swarm),
driven from this machine through the gateway's published port on 127.0.0.1.

It runs only when asked (NBORCH_ENGINE_TESTS=1, as `.ci/run` does once) and when an engine
answers; otherwise every test skips and says why. The image is built once per session from
this checkout (scripts/base_image.sh, scripts/build_image.sh: no registry is used), or
taken from NBORCH_ENGINE_IMAGE.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.engine.engine import PREFIX, EngineError, docker, engine_unreachable, remove_leftovers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(ROOT, 'tests', 'engine', 'app')  # the image's /app: the tests' executors
ENABLE_VAR = 'NBORCH_ENGINE_TESTS'
IMAGE_VAR = 'NBORCH_ENGINE_IMAGE'
IMAGE = 'nborch-engine-test:latest'
TIMINGS: dict[str, float] = {}  # what the terminal summary reports

if APP not in sys.path:
    sys.path.insert(0, APP)  # exports check `engine_ledger:Ledger` imports here as in /app


def pytest_collection_modifyitems(config, items):
    if os.environ.get(ENABLE_VAR) != '1':
        why = f'the engine tier runs with {ENABLE_VAR}=1 (.ci/run runs it once)'
    else:
        why = engine_unreachable()
    if why:
        for item in items:
            if item.nodeid.startswith('tests/engine/'):
                item.add_marker(pytest.mark.skip(reason=why))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if TIMINGS:
        terminalreporter.write_sep('-', 'engine tier timings')
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f'{what}: {seconds:.0f} s')


def _script(*argv: str, timeout: float) -> None:
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        raise EngineError(f'{" ".join(argv)} exited {done.returncode}: {done.stderr[-3000:]}')
    TIMINGS[os.path.basename(argv[0])] = time.monotonic() - start


@pytest.fixture(scope='session')
def image() -> str:
    remove_leftovers()
    if os.environ.get(IMAGE_VAR):
        return os.environ[IMAGE_VAR]
    _script(os.path.join(ROOT, 'scripts', 'base_image.sh'), timeout=900)
    _script(os.path.join(ROOT, 'scripts', 'build_image.sh'), '-t', IMAGE, APP, timeout=900)
    return IMAGE


@pytest.fixture(scope='session')
def swarm(image):
    """A one-node swarm on 127.0.0.1, left as found at the end."""
    state = docker('info', '--format', '{{.Swarm.LocalNodeState}}').strip()
    if state != 'active':
        docker('swarm', 'init', '--advertise-addr', '127.0.0.1')
    yield
    if state != 'active':
        docker('swarm', 'leave', '--force', check=False)


@pytest.fixture
def stack_name(request) -> str:
    return PREFIX + request.node.name.split('[')[0].removeprefix('test_')[:20].replace('_', '-') \
        + f'-{os.getpid() % 10000}'


@pytest.fixture
def deployed():
    """Tears down every stack a test deployed, failed or not."""
    stacks = []
    yield stacks.append
    for stack in stacks:
        try:
            stack.down()
        except EngineError as exc:
            print(f'teardown of {stack.name}: {exc}', file=sys.stderr)
    remove_leftovers()
