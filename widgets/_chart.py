"""`QpsChart`: search QPS and index time per setup, drawn with matplotlib into a PNG.

Drawing uses `matplotlib.figure.Figure` with the Agg canvas directly, never pyplot (pyplot
keeps global state and must not be used from threads). Updates go through a `Coalescer`, so
`set()` may be called as often as wanted (e.g. from a client's `on_done` callback on
nborch's loop thread): the PNG is rendered at most `max_hz` times a second, on the chart's
own writer thread, never on the caller's.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import threading
from dataclasses import dataclass

import ipywidgets as widgets

from nborch.widgets._live import Coalescer, Writer

_COLORS = ('#9aa0a6', '#1a73e8', '#188038', '#e8710a', '#a142f4', '#d93025')


@dataclass(frozen=True)
class SetupFigures:
    """What one setup measured so far. `done` is False while its search still runs."""

    setup: str
    index_s: float | None = None
    search_s: float | None = None
    qps: float | None = None
    done: bool = False
    error: str | None = None

    @property
    def state(self) -> str:
        if self.error:
            return 'n/a'
        if self.done:
            return 'done'
        return 'running' if self.index_s is not None or self.qps is not None else 'waiting'


def render_png(setups: list[SetupFigures], title: str, size: tuple[float, float] = (8.0, 3.0),
               dpi: int = 100) -> bytes:
    """Two bar panels, QPS (higher is better) and index time (lower is better); a setup that
    could not run shows `n/a` where its bars would be. Pure: same input, same picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=dpi, layout='constrained')
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    names = [s.setup for s in setups]
    positions = list(range(len(setups)))
    panels = ((axes[0], 'qps', 'search QPS (higher is better)', '{:.0f}'),
              (axes[1], 'index_s', 'index time, s (lower is better)', '{:.2f}'))
    for ax, key, label, fmt in panels:
        values = [getattr(s, key) for s in setups]
        known = [v for v in values if v is not None]
        top = max(known, default=1.0) or 1.0
        for i, (s, v) in enumerate(zip(setups, values)):
            color = _COLORS[i % len(_COLORS)]
            if s.error:
                ax.text(i, top * 0.05, 'n/a', ha='center', va='bottom', color='#b00020',
                        fontsize=10, fontweight='bold')
                continue
            if v is None:
                continue
            partial = key == 'qps' and not s.done
            ax.bar(i, v, color=color, alpha=0.45 if partial else 0.9,
                   hatch='//' if partial else None, edgecolor=color, width=0.6)
            ax.text(i, v, fmt.format(v) + (' …' if partial else ''), ha='center',
                    va='bottom', fontsize=9)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(positions, names, fontsize=9)
        ax.set_xlim(-0.6, max(len(setups), 1) - 0.4)
        ax.set_ylim(0, top * 1.22)
        ax.spines[['top', 'right']].set_visible(False)
        ax.tick_params(axis='y', labelsize=8)
    figure.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=dpi)
    return buffer.getvalue()


class QpsChart(widgets.VBox):
    """A bar chart comparing setups, live in a notebook, static (PNG) everywhere else.

    `set(setup, ...)` adds or updates one setup (any thread); setups keep the order they were
    first named in. `flush()` waits until the newest state is drawn. `text/plain` lists the
    setups and their state (no timings: those change from run to run); `text/html` embeds
    the PNG.
    """

    def __init__(self, title: str = 'Search QPS and index time per setup', *,
                 setups: tuple[str, ...] = (), max_hz: float = 10.0,
                 size: tuple[float, float] = (8.0, 3.0), dpi: int = 100):
        self.title = title
        self.size = size
        self.dpi = dpi
        self._lock = threading.Lock()
        self._setups: dict[str, SetupFigures] = {name: SetupFigures(name) for name in setups}
        self.image = widgets.Image(format='png', value=self.png())
        super().__init__(children=[self.image])
        self._coalescer = Coalescer(self._draw, max_hz)
        self._writer = Writer(self._coalescer, name='nborch-QpsChart')

    # -- data --------------------------------------------------------------------------------
    def set(self, setup: str, **figures) -> SetupFigures:
        """Add or update `setup` with any of index_s, search_s, qps, done, error."""
        with self._lock:
            current = self._setups.get(setup, SetupFigures(setup))
            updated = dataclasses.replace(current, **figures)
            self._setups[setup] = updated
            state = list(self._setups.values())
        self._coalescer.submit(state)
        self._writer.kick()
        return updated

    @property
    def setups(self) -> list[SetupFigures]:
        with self._lock:
            return list(self._setups.values())

    def __getitem__(self, setup: str) -> SetupFigures:
        return self._setups[setup]

    # -- drawing -----------------------------------------------------------------------------
    def png(self, setups: list[SetupFigures] | None = None) -> bytes:
        """The chart of `setups` (default: the current state) as PNG bytes."""
        return render_png(self.setups if setups is None else setups, self.title, self.size,
                          self.dpi)

    def _draw(self, setups: list[SetupFigures]) -> None:
        self.image.value = self.png(setups)

    @property
    def draws(self) -> int:
        return self._coalescer.draws

    def flush(self) -> 'QpsChart':
        """Block until the latest state is on the widget (at most one frame, 0.1 s)."""
        self._coalescer.flush()
        return self

    def close(self) -> None:
        if getattr(self, '_writer', None) is not None:
            self._writer.stop()
        if getattr(self, 'image', None) is not None:
            self.image.close()
        super().close()

    # -- representations ---------------------------------------------------------------------
    def text(self) -> str:
        setups = self.setups
        lines = [f'QpsChart: {self.title}']
        if not setups:
            lines.append('no setups yet')
        for s in setups:
            lines.append(f'  {s.setup}: {s.state}' + (f' ({s.error})' if s.error else ''))
        return '\n'.join(lines)

    def html(self) -> str:
        data = base64.b64encode(self.png()).decode('ascii')
        return (f'<div class="nborch-qps-chart"><img alt="{self.title}" '
                f'src="data:image/png;base64,{data}"></div>')

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle['text/plain'] = self.text()
        bundle['text/html'] = self.html()
        return bundle
