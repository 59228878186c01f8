"""`Serving`: what a Deployment and a Flow share once their specs are built — lifecycle,
`block()`, `post()` through their gateway, and the joined status report."""
from __future__ import annotations

import signal
import threading
import time

from docarray import DocList

from nborch.client import Client
from nborch.orchestrator import Orchestrator
from nborch.owner_router import add_counters


class Serving:
    """Subclasses set `self._orchestrator` (and nothing starts until `start()`)."""

    _orchestrator: Orchestrator
    _client: Client | None = None
    _grpc_client: Client | None = None
    _poster: Client | None = None
    _given_port: int | None = None  # the gateway port the user chose (exports keep it)

    # -- identity --------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._orchestrator.host

    @property
    def port(self) -> int:
        return self._orchestrator.port

    @property
    def ports(self) -> dict[str, int]:
        """The gateway's public port per protocol, e.g. {'grpc': 54321, 'http': 54322}."""
        return dict(zip(self._orchestrator.protocols, self._orchestrator.ports))

    @property
    def protocol(self) -> str:
        """The first protocol (the one `port`, `post()` and `client` use)."""
        return self._orchestrator.protocols[0]

    @property
    def address(self) -> str:
        return f'{self.host}:{self.port}'

    @property
    def running(self) -> bool:
        """Started and the gateway is up; False while a killed gateway is being restarted
        (and after `close()`). `healthy` also needs every replica up."""
        return self._orchestrator.running

    @property
    def secret(self) -> bytes | None:
        """This run's deployment secret (new at each start): `Client(..., secret=...)` from
        another process of this user, where `require_secret=True` closes the gateway."""
        return self._orchestrator.secret

    @property
    def healthy(self) -> bool:
        """Running with every process up; `status()['down']` names any that is not."""
        return self._orchestrator.healthy

    def live_edits(self, edited: 'Serving') -> dict[str, dict] | None:
        """{executor: changes} when `edited` differs from this one only in what running
        executors take without a restart, else None (Deployment and Flow say)."""
        return None

    # -- export --------------------------------------------------------------------------
    def to_kubernetes_yaml(self, output_base_path: str, *, namespace: str = 'default',
                           image: str | None = None, k8s_namespace: str | None = None) -> list[str]:
        """Write Kubernetes manifests (one file per workload) and a Dockerfile for the image
        into `output_base_path`; returns the paths. `kubectl apply -f output_base_path`."""
        self._check_exportable()
        from nborch.export import to_kubernetes_yaml
        return to_kubernetes_yaml(self.name, self._orchestrator.plans, self._given_port,
                                  output_base_path, namespace=k8s_namespace or namespace,
                                  image=image)

    def to_docker_compose_yaml(self, output_path: str = 'docker-compose.yml', *,
                               image: str | None = None) -> list[str]:
        """Write a Docker Compose file (and a Dockerfile beside it); returns the paths.
        `docker compose -f output_path up`."""
        self._check_exportable()
        from nborch.export import to_docker_compose_yaml
        return to_docker_compose_yaml(self.name, self._orchestrator.plans, self._given_port,
                                      output_path, image=image)

    def _check_exportable(self) -> None:
        if self._orchestrator.protocols != ('grpc',):
            from nborch.errors import ExportError
            raise ExportError(f'protocol={list(self._orchestrator.protocols)}: exported '
                              "gateways serve gRPC only for now; export with protocol='grpc'")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self):
        """Start every process; return once all are ready (the object itself).

        Stateful executors are ready when every shard's Raft group has elected a leader, so
        the first write does not wait for an election.
        """
        self._orchestrator.start()
        try:
            self._wait_for_leaders()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_for_leaders(self) -> None:
        stateful = {p.spec.name for p in self._orchestrator.plans if p.spec.stateful}
        if not stateful:
            return
        deadline = time.monotonic() + self._orchestrator.ready_timeout
        while True:
            executors = self._status_client.status().get('executors', [])
            leaderless = [f'{e["name"]}/shard-{i}' for e in executors if e['name'] in stateful
                          for i, shard in enumerate(e['shards'])
                          if not any((r.get('raft') or {}).get('role') == 'leader'
                                     for r in shard['replicas'])]
            if not leaderless:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f'no Raft leader elected in time for {", ".join(leaderless)}')
            time.sleep(0.05)

    def close(self) -> None:
        """Stop every process this object started. Idempotent."""
        for client in (self._client, self._grpc_client, self._poster):
            if client is not None:
                client.close()
        self._client = self._grpc_client = self._poster = None
        self._orchestrator.stop()

    stop = close

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def block(self, stop_event: threading.Event | None = None) -> None:
        """Serve until `stop_event` is set, Ctrl-C, or SIGTERM (the caller then closes)."""
        event = stop_event or threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: event.set())
        try:
            while not event.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _repr_mimebundle_(self, include=None, exclude=None):
        """In a notebook a running orchestration shows as its live dashboard (topology,
        GPUs, Raft); `text/plain` stays the repr."""
        if not self.running:
            return {'text/plain': repr(self)}
        from nborch.widgets import show
        dashboard = getattr(self, '_dashboard', None)
        if dashboard is None or not dashboard.watching:
            self._dashboard = show(self)  # one polling thread per object
        bundle = self._dashboard._repr_mimebundle_(include=include, exclude=exclude)
        if isinstance(bundle, tuple):  # (data, metadata)
            bundle[0]['text/plain'] = repr(self)
        else:
            bundle['text/plain'] = repr(self)
        return bundle

    # -- requests --------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """A client of the gateway's first protocol, as any other caller's (with gRPC
        first, `post()` routes from this process instead)."""
        if self._client is None:
            direct = self._orchestrator.direct
            if direct is not None:  # the external replica itself, with its own TLS
                self._client = Client(host=self.host, port=self.port,
                                      secret=self._orchestrator.secret, tls=direct.tls,
                                      max_message_size=self._orchestrator.max_message_size)
            else:
                self._client = self._own_client(self.protocol, self.port)
        return self._client

    @property
    def _status_client(self) -> Client:
        """gRPC to the gateway (its public gRPC port, or the loopback one an HTTP-only
        gateway keeps for its owner): status reports and leader waits."""
        if self.protocol == 'grpc':
            return self.client
        if self._grpc_client is None:
            self._grpc_client = self._own_client('grpc', self._orchestrator.grpc_port)
        return self._grpc_client

    def _own_client(self, protocol: str, port: int) -> Client:
        # It proves the deployment secret (over gRPC the gateway must prove it back).
        tls = self._orchestrator.tls
        host = '127.0.0.1' if port != self.port_of(protocol) else self.host
        return Client(host=host, port=port, protocol=protocol, secret=self._orchestrator.secret,
                      tls=tls.for_own_client() if tls else False,
                      max_message_size=self._orchestrator.max_message_size)

    def port_of(self, protocol: str) -> int | None:
        return self._orchestrator.port_of(protocol)

    def post(self, on: str, inputs=None, **kwargs) -> DocList:
        """Same as `Client(port=self.port).post(...)` (see `Client.post`), one hop shorter.

        With the gRPC protocol first (the default), this process routes the requests
        itself, as the gateway would, straight to the replicas: it holds the topology.
        With HTTP first, they go through the gateway's HTTP port, as a client's would."""
        return self._posting_client.post(on, inputs, **kwargs)

    @property
    def _posting_client(self) -> Client:
        router = self._orchestrator.router
        if router is None or self.protocol != 'grpc':
            return self.client
        if self._poster is None:
            self._poster = self._own_client('grpc', self.port).route_through(router)
        return self._poster

    # The reference system's shortcuts, as on its Flow and Client.
    def index(self, inputs=None, **kwargs) -> DocList:
        """`post('/index', inputs, ...)`."""
        return self.post('/index', inputs, **kwargs)

    def search(self, inputs=None, **kwargs) -> DocList:
        """`post('/search', inputs, ...)`."""
        return self.post('/search', inputs, **kwargs)

    def update(self, inputs=None, **kwargs) -> DocList:
        """`post('/update', inputs, ...)`."""
        return self.post('/update', inputs, **kwargs)

    def delete(self, inputs=None, **kwargs) -> DocList:
        """`post('/delete', inputs, ...)`."""
        return self.post('/delete', inputs, **kwargs)

    def status(self) -> dict:
        """Processes (pids, states, restarts, GPUs) joined with the gateway's routing counters.

        `executors[i].shards[s].replicas[r]` has `served`, `outstanding`, `failures`,
        `deadline_misses`, `ejections` and `ejected` from the routing (the gateway's and
        this process's own, which `post()` uses, summed) and `pid`, `port`,
        `state`, `restarts`, `gpu` from the owner. It never raises because a process is
        down: `healthy` is False, `down` names the processes not up, and while the gateway
        is down the routing counters are missing (`gateway.state` says 'restarting').
        A Deployment of one external address runs no gateway (`gateway.state` is 'none',
        `gateway.direct` the address): its one replica reports `reachable`, `pid`, `served`.
        """
        running = self.running  # first: a process seen down below stays down in the report
        processes = self._orchestrator.process_status()
        healthy, down = self._orchestrator.healthy, self._orchestrator.down()
        routed = {}
        if running:  # a gateway that died since is reported, not raised
            try:
                routed = self._status_client.status(timeout=2.0)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                processes['gateway']['error'] = str(exc)
        router = self._orchestrator.router
        if routed and self._poster is not None and router is not None:
            routed = add_counters(routed, router.counters())
        if self._orchestrator.direct is not None:  # no gateway: the replica reports itself
            (((replica,),),) = processes['executors'].values()
            replica.update(reachable=bool(routed), pid=routed.get('pid'),
                           served=routed.get('requests_served'))
            if running and not routed:
                healthy, down = False, [replica['address']]
            routed = {}
        counters = {e['name']: e for e in routed.get('executors', [])}
        executors = []
        for name, shards in processes['executors'].items():
            routing = counters.get(name, {}).get('shards', [])
            for s, replicas in enumerate(shards):
                for r, replica in enumerate(replicas):
                    if s < len(routing) and r < len(routing[s]['replicas']):
                        replica.update(routing[s]['replicas'][r])
            executors.append({'name': name, 'needs': counters.get(name, {}).get('needs', []),
                              'shards': [{'shard': s, 'replicas': replicas}
                                         for s, replicas in enumerate(shards)]})
        return {'name': self._orchestrator.label, 'address': self.address,
                'running': running, 'healthy': healthy and running, 'down': down,
                'gateway': processes['gateway'],
                'requests': routed.get('requests', 0), 'executors': executors,
                'recent_routes': routed.get('recent_routes', [])}
