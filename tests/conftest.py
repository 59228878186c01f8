"""Test-wide guards: no nborch process may outlive the test (or session) that started it.

Every process a test run starts inherits NBORCH_TEST_SESSION, so the session-end check
finds leftovers even when they were re-parented (e.g. after a test killed their owner).
"""
from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest

SESSION_MARK = f'nborch-test-{uuid.uuid4().hex[:12]}'
os.environ['NBORCH_TEST_SESSION'] = SESSION_MARK

# A shell that starts CI in the background ignores SIGINT, and children inherit an ignored
# signal (Python would not turn Ctrl-C into KeyboardInterrupt in the CLI tests). A handled
# signal is reset to its default by exec, so handling it here gives every child the default
# without a preexec_fn: that forces a plain fork of this gRPC-running process, whose fork
# handlers then poll an epoll fd the child closes ("epoll_wait error: Bad file descriptor",
# and now and then a child that never starts).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def session_processes() -> list[psutil.Process]:
    """Live processes (other than this one) started by this test session."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(['pid']):
        if proc.info['pid'] == me:
            continue
        try:
            if proc.environ().get('NBORCH_TEST_SESSION') == SESSION_MARK and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_for_no_processes(timeout: float = 5.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := session_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        try:
            lines.append(f'{p.pid}: {" ".join(p.cmdline())[:160]}')
        except psutil.Error:
            lines.append(f'{p.pid}: (gone)')
    return '\n'.join(lines)


@pytest.fixture(autouse=True)
def no_leftover_processes(request):
    """Fail the test that leaves a process behind (then kill it, so the next test is clean)."""
    yield
    if 'no_leak_check' in request.keywords:
        return
    left = wait_for_no_processes()
    if left:
        text = describe(left)
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        pytest.fail(f'processes left behind:\n{text}')


def pytest_sessionfinish(session, exitstatus):
    left = wait_for_no_processes()
    if left:
        session.exitstatus = 1
        print(f'\nnborch processes outlived the test session:\n{describe(left)}')
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass


def pytest_configure(config):
    config.addinivalue_line('markers', 'no_leak_check: skip the per-test leftover-process check')
