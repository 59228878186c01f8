"""Views over status snapshots; no business logic.

- `TopologyView(dep)`: shards × replicas grid of request counts and the last routes, live.
- `GpuTable(dep)`: replica → assigned device → what the replica process sees.
- `RaftView(dep)`: per replica role, term, leader, commit and applied index, lag.
- `QpsChart()`: search QPS and index time per setup (filled by `nborch.compare.compare`).
- `show(dep)`: a `Dashboard` (VBox) of the views that apply, driven by one poller.

Each view also takes a status dict instead of a running Deployment/Flow (a static view), and
has a stable `text/plain` and a static `text/html` form for places without widgets.
"""
from nborch.widgets._chart import QpsChart, SetupFigures
from nborch.widgets._views import Dashboard, GpuTable, RaftView, StatusView, TopologyView, show

__all__ = ['Dashboard', 'GpuTable', 'QpsChart', 'RaftView', 'SetupFigures', 'StatusView',
           'TopologyView', 'show']
