"""Driving a Docker engine from the tests: the CLI with a time limit on every call, exported
stacks deployed with docker-compose or `docker stack deploy`, and bounded waits.

Everything the tests make carries the prefix `nborch-engine-` (projects, stacks), so the
teardown finds it all, even after a failed test.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from typing import Callable, TypeVar

PREFIX = 'nborch-engine-'
CALL_TIMEOUT_S = 180.0
T = TypeVar('T')


class EngineError(AssertionError):
    pass


def docker(*args: str, timeout: float = CALL_TIMEOUT_S, check: bool = True,
           cwd: str | None = None) -> str:
    return run(['docker', *args], timeout=timeout, check=check, cwd=cwd)


def run(argv: list[str], *, timeout: float = CALL_TIMEOUT_S, check: bool = True,
        cwd: str | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise EngineError(f'{" ".join(argv)}: no answer in {timeout:.0f}s') from None
    if check and done.returncode != 0:
        raise EngineError(f'{" ".join(argv)} exited {done.returncode}: '
                          f'{(done.stderr or done.stdout).strip()[-2000:]}')
    return done.stdout


def engine_unreachable() -> str | None:
    """Why no engine can be used here, or None."""
    if shutil.which('docker') is None:
        return 'no docker command'
    try:
        docker('info', '--format', '{{.ServerVersion}}', timeout=20)
    except EngineError as exc:
        return f'no docker engine answers: {exc}'
    return None


def wait_until(what: str, probe: Callable[[], T], timeout: float, every: float = 0.5) -> T:
    """Call `probe` until it returns something true; EngineError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 -- a probe that fails is a probe not ready
            last = exc
        if time.monotonic() > deadline:
            raise EngineError(f'{what}: not within {timeout:.0f}s (last: {last!r})')
        time.sleep(every)


class Stack:
    """One exported compose file, deployed. Subclasses: how each engine does it."""

    def __init__(self, name: str, folder: str):
        self.name, self.folder = name, folder
        self.file = os.path.join(folder, 'docker-compose.yml')

    def containers(self, service: str) -> list[str]:
        """Ids of the running containers of `service`."""
        raise NotImplementedError

    @property
    def network(self) -> str:
        return f'{self.name}_default'

    def container(self, service: str) -> str:
        (one,) = wait_until(f'one running container of {service}',
                            lambda: self.containers(service)[:1], timeout=120)
        return one

    def inspect(self, container: str) -> dict:
        return json.loads(docker('inspect', container))[0]

    def disconnect(self, container: str) -> None:
        docker('network', 'disconnect', self.network, container)

    def connect(self, container: str, service: str) -> None:
        # The service's name is the alias its peers dial: give it back with the link.
        docker('network', 'connect', '--alias', service, self.network, container)

    def kill(self, container: str) -> None:
        """A crash: SIGKILL to the container's process from this machine (`docker kill`
        counts as a deliberate stop, which `restart: unless-stopped` respects)."""
        os.kill(self.inspect(container)['State']['Pid'], signal.SIGKILL)

    def running(self, service: str) -> list[str]:
        return self.containers(service)

    def started_at(self, container: str) -> str | None:
        """When the container last started; None once it is gone or not running."""
        found = docker('inspect', '--format', '{{.State.Running}} {{.State.StartedAt}}',
                       container, check=False).split()
        return found[1] if len(found) == 2 and found[0] == 'true' else None

    def recovered(self, service: str, victim: str, started: str, count: int) -> bool:
        """After `victim` (started at `started`) was killed: the engine started it again
        (Compose restarts the same container) or replaced it (swarm starts a new task), and
        `count` containers of the service run."""
        running = self.running(service)
        if len(running) != count:
            return False
        if victim in running:  # both short ids, from `docker ps -q`
            again = self.started_at(victim)
            return again is not None and again != started
        return True

    def exec(self, container: str, *argv: str) -> str:
        return docker('exec', container, *argv, timeout=60)


class ComposeStack(Stack):
    def compose(self, *args: str, timeout: float = CALL_TIMEOUT_S) -> str:
        return run(['docker-compose', '-p', self.name, '-f', self.file, *args],
                   timeout=timeout, cwd=self.folder)

    def up(self) -> None:
        self.compose('up', '-d')

    def scale(self, service: str, replicas: int) -> None:
        self.compose('up', '-d', '--no-recreate', '--scale', f'{service}={replicas}')

    def stop(self) -> None:
        self.compose('stop', '-t', '10')

    def start(self) -> None:
        self.compose('start')

    def down(self) -> None:
        self.compose('down', '-v', '-t', '5', timeout=300)

    def containers(self, service: str) -> list[str]:
        return docker('ps', '-q', '--filter', f'label=com.docker.compose.project={self.name}',
                      '--filter', f'label=com.docker.compose.service={service}').split()


class SwarmStack(Stack):
    def up(self) -> None:
        docker('stack', 'deploy', '-c', self.file, self.name, cwd=self.folder)

    def scale(self, service: str, replicas: int) -> None:
        docker('service', 'scale', '--detach', f'{self.name}_{service}={replicas}')

    def down(self) -> None:
        docker('stack', 'rm', self.name, check=False)
        wait_until(f'stack {self.name} gone', lambda: not docker(
            'ps', '-aq', '--filter', f'label=com.docker.stack.namespace={self.name}').split()
            and not docker('network', 'ls', '-q', '--filter', f'name={self.network}').split(),
            timeout=120, every=1)
        volumes = docker('volume', 'ls', '-q', '--filter',
                         f'label=com.docker.stack.namespace={self.name}').split()
        if volumes:
            docker('volume', 'rm', '-f', *volumes)

    def containers(self, service: str) -> list[str]:
        return docker('ps', '-q', '--filter', f'label=com.docker.swarm.service.name='
                                              f'{self.name}_{service}').split()


def remove_leftovers() -> None:
    """Whatever an earlier, interrupted run left: this tier's stacks, projects, volumes."""
    if docker('info', '--format', '{{.Swarm.LocalNodeState}}', check=False).strip() == 'active':
        for stack in docker('stack', 'ls', '--format', '{{.Name}}', check=False).split():
            if stack.startswith(PREFIX):
                SwarmStack(stack, '.').down()
    for label in ('com.docker.compose.project', 'com.docker.stack.namespace'):
        for line in docker('ps', '-a', '--format', f'{{{{.ID}}}} {{{{.Label "{label}"}}}}',
                           check=False).splitlines():
            cid, _, owner = line.partition(' ')
            if owner.startswith(PREFIX):
                docker('rm', '-f', '-v', cid, check=False)
    for line in docker('volume', 'ls', '--format', '{{.Name}}', check=False).split():
        if line.startswith(PREFIX) or line.startswith(PREFIX.replace('-', '')):
            docker('volume', 'rm', '-f', line, check=False)
    for line in docker('network', 'ls', '--format', '{{.Name}}', check=False).split():
        if line.startswith(PREFIX) or line.startswith(PREFIX.replace('-', '')):
            docker('network', 'rm', line, check=False)
