"""Run an exported topology's containers as local processes.

Each container becomes `python -m nborch <its args>`: the exact arguments of the manifest, with
what a cluster would provide mapped onto one machine — each replica's listening ports become
free loopback ports, the DNS names the containers dial go through `NBORCH_HOSTS` to those
ports, volume mounts become folders of their own, and Kubernetes' `$(VAR)` references are
expanded from the container's env (the pod index of a StatefulSet pod included). The
deployment secret is a file, as a cluster mounts it: for Kubernetes the one
`kubectl create secret` would hold (made here, beside the manifests' folder), for Compose the
file the compose file names.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import yaml

from nborch.ports import free_port
from nborch.runtime.auth import new_secret
from nborch.runtime.resolve import HOSTS_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Container:
    """One replica as a cluster would run it."""

    name: str                      # e.g. 'indexer-1' (for logs)
    args: list[str]
    env: dict[str, str]
    ports: list[int]               # ports it listens on in its own network namespace
    dns: list[str]                 # names that resolve to it
    mounts: list[str] = field(default_factory=list)
    gateway: bool = False
    secrets: dict[str, str] = field(default_factory=dict)  # path in the container → file here


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` substitution in container args."""
    return re.sub(r'\$\((\w+)\)', lambda m: env.get(m.group(1), m.group(0)), arg)


def _kubernetes_secret(directory: str, name: str) -> str:
    """The file holding what `kubectl create secret generic NAME` was given."""
    path = os.path.join(os.path.dirname(os.path.abspath(directory)), f'{name}.txt')
    if not os.path.exists(path):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), 'w') as f:
            f.write(new_secret().decode())
    return path


def kubernetes_containers(directory: str) -> list[Container]:
    objects = []
    for name in sorted(os.listdir(directory)):
        if name.endswith('.yml'):
            with open(os.path.join(directory, name)) as f:
                objects += [o for o in yaml.safe_load_all(f) if o]
    containers = []
    for obj in objects:
        if obj['kind'] not in ('Deployment', 'StatefulSet'):
            continue
        meta, spec = obj['metadata'], obj['spec']
        name, namespace = meta['name'], meta['namespace']
        (c,) = spec['template']['spec']['containers']
        secret_volumes = {v['name']: v['secret'] for v in spec['template']['spec'].get('volumes', [])
                          if 'secret' in v}
        secrets = {f'{m["mountPath"]}/{item["path"]}':
                   _kubernetes_secret(directory, secret_volumes[m['name']]['secretName'])
                   for m in c.get('volumeMounts', []) if m['name'] in secret_volumes
                   for item in secret_volumes[m['name']]['items']}
        for i in range(spec['replicas']):
            env = {}
            for var in c.get('env', []):
                if 'value' in var:
                    env[var['name']] = var['value']
                else:  # only the StatefulSet pod index is taken from the downward API
                    assert 'pod-index' in var['valueFrom']['fieldRef']['fieldPath'], var
                    env[var['name']] = str(i)
            dns = [f'{name}.{namespace}.svc']
            if obj['kind'] == 'StatefulSet':
                dns.append(f'{name}-{i}.{spec["serviceName"]}.{namespace}.svc')
            containers.append(Container(
                name=f'{name}-{i}', args=[_expand(a, env) for a in c['args']], env=env,
                ports=[p['containerPort'] for p in c['ports']], dns=dns,
                mounts=[m['mountPath'] for m in c.get('volumeMounts', [])
                        if m['name'] not in secret_volumes],
                gateway=c['args'][0] == 'gateway', secrets=secrets))
    return containers


def compose_containers(path: str) -> list[Container]:
    with open(path) as f:
        document = yaml.safe_load(f)
    services = document['services']
    files = {name: os.path.join(os.path.dirname(os.path.abspath(path)), secret['file'])
             for name, secret in document.get('secrets', {}).items()}
    containers = []
    for name, service in services.items():
        replicas = service.get('deploy', {}).get('replicas', 1)
        args = service['command']
        ports = [int(args[args.index('--port') + 1])]
        if '--peers' in args:  # a stateful replica listens on its own peer address too
            peers = args[args.index('--peers') + 1].split(',')
            ports.append(int(peers[int(args[args.index('--replica-id') + 1])].rpartition(':')[2]))
        for i in range(replicas):
            containers.append(Container(
                name=f'{name}-{i}' if replicas > 1 else name, args=list(args),
                env={k: str(v) for k, v in service.get('environment', {}).items()},
                ports=ports, dns=[name],
                mounts=[v.split(':', 1)[1] for v in service.get('volumes', [])],
                gateway=args[0] == 'gateway',
                secrets={s['target']: files[s['source']] for s in service.get('secrets', [])}))
    return containers


class LocalCluster:
    """Starts every container as a process (executors first, then the gateway)."""

    def __init__(self, containers: list[Container], workdir: str):
        self.containers = containers
        self.workdir = workdir
        self.local_port: dict[tuple[str, int], int] = {
            (c.name, p): free_port('127.0.0.1') for c in containers for p in c.ports}
        hosts: dict[str, list[str]] = {}
        for c in containers:
            for name in c.dns:
                for p in c.ports:
                    hosts.setdefault(f'{name}:{p}', []).append(
                        f'127.0.0.1:{self.local_port[c.name, p]}')
        self.hosts = hosts
        self.procs: dict[str, subprocess.Popen] = {}
        self.gateway_port: int | None = None

    def command(self, c: Container) -> list[str]:
        args = list(c.args)
        port = int(args[args.index('--port') + 1])
        args[args.index('--port') + 1] = str(self.local_port[c.name, port])
        for mount in c.mounts:  # the container's volume: a folder of this replica's own
            folder = self.mount(c, mount)
            os.makedirs(folder, exist_ok=True)
            args = [folder if a == mount else a for a in args]
        args = [c.secrets.get(a, a) for a in args]  # the secret, where the cluster mounts it
        return [sys.executable, '-m', 'nborch', *args]

    def mount(self, c: Container, mount: str) -> str:
        return os.path.join(self.workdir, c.name + mount.replace('/', '_'))

    def start(self, timeout: float = 90) -> 'LocalCluster':
        try:
            for c in [c for c in self.containers if not c.gateway]:
                self._spawn(c)
            for name in list(self.procs):
                self._wait_ready(name, timeout)
            (gateway,) = [c for c in self.containers if c.gateway]
            self._spawn(gateway)
            self._wait_ready(gateway.name, timeout)
            self.gateway_port = self.local_port[gateway.name, gateway.ports[0]]
        except BaseException:
            self.stop()
            raise
        return self

    def log_path(self, name: str) -> str:
        return os.path.join(self.workdir, f'{name}.log')

    def _spawn(self, c: Container) -> None:
        env = {**os.environ, **c.env, HOSTS_ENV: json.dumps(self.hosts)}
        with open(self.log_path(c.name), 'w') as log:  # a file: nobody has to drain a pipe
            self.procs[c.name] = subprocess.Popen(
                self.command(c), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def _wait_ready(self, name: str, timeout: float) -> None:
        """Roles run alone print `{"pid": ..., "port": ...}` once they serve."""
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            with open(self.log_path(name)) as f:
                if any(line.startswith('{"pid"') for line in f):
                    return
            time.sleep(0.05)
        with open(self.log_path(name)) as f:
            output = f.read()
        raise AssertionError(f'{name} did not start: {" ".join(proc.args)}\n{output}')

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> 'LocalCluster':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
