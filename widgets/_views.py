"""Live views over `status()` snapshots: `TopologyView`, `GpuTable`, `RaftView`, `Dashboard`.

Each view is an `ipywidgets.VBox` holding one `HTML` widget. A view built from a running
Deployment/Flow watches it with one `Writer` thread: it polls `status()` every `interval`
seconds, and a `Coalescer` redraws at most `max_hz` times a second, only when the HTML
changed (an idle deployment costs one status call per tick and sends no widget messages).
The thread ends when the orchestration stops (the view keeps its last counts, marked
stopped) or when the view is closed. A view built from a dict shows that snapshot only.

Outside a widget renderer, `_repr_mimebundle_` gives `text/plain` and `text/html` that hold
no ports, pids, addresses or times (see `_render`), so notebook outputs are stable.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Callable

import ipywidgets as widgets

from nborch.widgets import _render
from nborch.widgets._live import Coalescer, Writer

DEFAULT_INTERVAL = 0.1   # seconds between status polls
DEFAULT_MAX_HZ = 10.0    # redraws per second, at most


class _Watch:
    """Polls one orchestration for one or more views, from one `Writer` thread."""

    def __init__(self, orchestration, draw: Callable[[dict], None], *, interval: float,
                 max_hz: float, name: str, live: bool = True):
        self.orchestration = orchestration
        self.live = live  # False: no thread; refresh() draws on the caller's thread
        self.last: dict = {}
        self.error: Exception | None = None  # the last poll's failure, if it failed
        self.coalescer = Coalescer(draw, max_hz)
        self.writer = Writer(self.coalescer, poll=self.poll, interval=interval, name=name)
        self.closed = threading.Event()

    def snapshot(self) -> dict:
        """A fresh snapshot (or the last one, marked stopped, once the orchestration stopped)."""
        if not getattr(self.orchestration, 'running', False):
            return {**self.last, 'running': False} if self.last else _stopped(self.orchestration)
        snapshot = self.orchestration.status()
        if not getattr(self.orchestration, 'running', False) and self.last:
            # it stopped while the status was taken: that status may have missed processes
            # already gone, so the last one taken whole stands, marked stopped
            return {**self.last, 'running': False}
        self.last = snapshot
        return snapshot

    def poll(self) -> bool:
        if self.closed.is_set():
            return False
        try:
            snapshot = self.snapshot()
        except Exception as exc:  # gateway restarting, or stopping under us
            self.error = exc
            if getattr(self.orchestration, 'running', False):
                return True  # keep the last drawing; try again next tick
            snapshot = self.snapshot()  # it stopped meanwhile: draw the last counts, stopped
        else:
            self.error = None
        self.coalescer.submit(snapshot)
        return bool(snapshot.get('running'))

    def refresh(self) -> dict:
        """Take a snapshot now (caller's thread) and hand it to the writer."""
        snapshot = self.snapshot()
        self.coalescer.submit(snapshot)
        if self.live:
            self.writer.kick()
        else:
            self.coalescer.flush()
        return snapshot

    def start(self) -> None:
        if self.live:
            self.writer.start()

    def stop(self) -> None:
        self.closed.set()
        self.writer.stop()


def _stopped(orchestration) -> dict:
    name = getattr(orchestration, 'name', None) or type(orchestration).__name__
    return {'name': name, 'running': False, 'requests': 0, 'executors': [], 'recent_routes': []}


class StatusView(widgets.VBox):
    """Base of the status views: one HTML body redrawn from snapshots.

    `orchestration`: a Deployment or Flow (anything with `status()` and `running`), or a
    status dict for a static view. `interval`: seconds between status polls. `max_hz`:
    redraws per second, at most. `watch=False`: no background thread; the view changes only
    on `refresh()` (and when displayed).
    """

    kind = 'StatusView'

    def __init__(self, orchestration: Any, *, interval: float = DEFAULT_INTERVAL,
                 max_hz: float = DEFAULT_MAX_HZ, watch: bool = True, **kwargs):
        self._watch: _Watch | None = None
        if isinstance(orchestration, Mapping):
            self._snapshot = dict(orchestration)
        else:
            self._watch = _Watch(orchestration, self.draw, interval=interval, max_hz=max_hz,
                                 name=f'nborch-{self.kind}', live=watch)
            self._snapshot = self._watch.snapshot()
        self._body = widgets.HTML(value=self.html(live=True))  # comm_open carries the counts
        super().__init__(children=[self._body], **kwargs)
        if self._watch is not None:
            self._watch.start()

    # -- content -----------------------------------------------------------------------------
    @property
    def snapshot(self) -> dict:
        """The status snapshot drawn last."""
        return self._snapshot

    def text(self) -> str:
        raise NotImplementedError

    def html(self, live: bool = False) -> str:
        raise NotImplementedError

    def draw(self, snapshot: dict) -> None:
        """Show `snapshot` (called by the writer thread; also by a Dashboard's writer)."""
        self._snapshot = snapshot
        value = self.html(live=True)
        if value != self._body.value:
            self._body.value = value

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def watching(self) -> bool:
        """True while a writer thread polls the orchestration for this view."""
        return self._watch is not None and self._watch.writer.alive

    def refresh(self) -> 'StatusView':
        """Take a snapshot now; the widget redraws from it within one frame (<= 0.1 s)."""
        if self._watch is not None:
            self._snapshot = self._watch.refresh()
        return self

    def close(self) -> None:
        """Stop watching and close the widget (its views disappear from the notebook)."""
        if getattr(self, '_watch', None) is not None:
            self._watch.stop()
        if getattr(self, '_body', None) is not None:
            self._body.close()
        super().close()

    # -- representations ---------------------------------------------------------------------
    def _fresh(self) -> None:
        if self._watch is not None and not self._watch.closed.is_set():
            try:
                self.refresh()
            except Exception:
                pass

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, **kwargs) -> dict:
        self._fresh()
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle['text/plain'] = self.text()
        bundle['text/html'] = self.html(live=False)
        return bundle


class TopologyView(StatusView):
    """Shards × replicas grid of request counts (served, in flight) and the last routes."""

    kind = 'TopologyView'

    def text(self) -> str:
        return _render.topology_text(self._snapshot)

    def html(self, live: bool = False) -> str:
        return _render.topology_html(self._snapshot, live=live)


class GpuTable(StatusView):
    """Replica → assigned device (`CUDA_VISIBLE_DEVICES=RR`) → what the process sees."""

    kind = 'GpuTable'

    def text(self) -> str:
        return _render.gpu_text(self._snapshot)

    def html(self, live: bool = False) -> str:
        return _render.gpu_html(self._snapshot, live=live)


class RaftView(StatusView):
    """Per replica: role, term, leader, commit and applied index, lag ("not stateful" if none)."""

    kind = 'RaftView'

    def text(self) -> str:
        return _render.raft_text(self._snapshot)

    def html(self, live: bool = False) -> str:
        return _render.raft_html(self._snapshot, live=live)


VIEWS = {'topology': TopologyView, 'gpu': GpuTable, 'raft': RaftView}


class Dashboard(widgets.VBox):
    """Several views of one orchestration, driven by one writer thread (one status poll)."""

    def __init__(self, orchestration: Any, views: tuple[str, ...] | None = None, *,
                 interval: float = DEFAULT_INTERVAL, max_hz: float = DEFAULT_MAX_HZ):
        unknown = [v for v in views or () if v not in VIEWS]
        if unknown:
            raise ValueError(f'unknown view(s) {unknown}; choose from {sorted(VIEWS)}')
        static = isinstance(orchestration, Mapping)
        self._watch = None if static else _Watch(orchestration, self._draw, interval=interval,
                                                 max_hz=max_hz, name='nborch-Dashboard')
        snapshot = dict(orchestration) if static else self._watch.snapshot()
        if views is None:
            views = ('topology',) + (('gpu',) if _render.any_gpu(snapshot) else ()) \
                + (('raft',) if _render.any_raft(snapshot) else ())
        self.views = [VIEWS[v](snapshot) for v in views]
        super().__init__(children=self.views)
        if self._watch is not None:
            self._watch.start()

    def _draw(self, snapshot: dict) -> None:
        for view in self.views:
            view.draw(snapshot)

    @property
    def watching(self) -> bool:
        return self._watch is not None and self._watch.writer.alive

    def refresh(self) -> 'Dashboard':
        if self._watch is not None:
            snapshot = self._watch.refresh()
            for view in self.views:
                view._snapshot = snapshot
        return self

    def close(self) -> None:
        if getattr(self, '_watch', None) is not None:
            self._watch.stop()
        for view in getattr(self, 'views', []):
            view.close()
        super().close()

    def __repr__(self) -> str:
        return _render.join_text(v.text() for v in self.views)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        if self._watch is not None and not self._watch.closed.is_set():
            try:
                self.refresh()
            except Exception:
                pass
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle['text/plain'] = repr(self)
        bundle['text/html'] = ''.join(v.html(live=False) for v in self.views)
        return bundle


def show(orchestration: Any, views: tuple[str, ...] | None = None, **kwargs) -> Dashboard:
    """The views that apply to `orchestration` (a Deployment, a Flow or a status dict): the
    topology always, the GPU table when a round robin assigned devices, the Raft view when a
    replica reports Raft state; or exactly `views` (names from 'topology', 'gpu', 'raft')."""
    return Dashboard(orchestration, views, **kwargs)
