"""Status snapshot → text and HTML. Pure functions: no widgets, no threads, no clock.

A snapshot is the dict `Serving.status()` returns (name, running, requests,
executors[i].shards[s].replicas[r], recent_routes). Every function here takes one and
returns a string, so the views are tested from canned dicts.

Two kinds of output, by contract:

- `*_text(snapshot)` and `*_html(snapshot, live=False)` hold only values that a rerun of the
  same requests reproduces (counts, states, device maps, setup names). Ports, pids,
  addresses and times stay out, so notebook outputs compare equal under nbval.
- `*_html(snapshot, live=True)` is what the live widget shows: the same table plus the
  volatile values (pids, ports, addresses, the time each route was taken). It changes only
  when the status does, so an idle deployment's widget sends no updates.
"""
from __future__ import annotations

import time
from html import escape
from typing import Any, Iterable, Sequence

MAX_ROUTES_TEXT = 6
MAX_ROUTES_HTML = 8

_FONT = ('font-family: var(--jp-ui-font-family, -apple-system, "Segoe UI", Roboto, sans-serif);'
         ' font-size: 13px; line-height: 1.35;')
_MONO = 'font-family: var(--jp-code-font-family, Menlo, Consolas, monospace);'
_TABLE = 'border-collapse: collapse; margin: 4px 0 8px 0; width: auto; table-layout: auto;'
_TH = 'padding: 3px 8px; text-align: left; color: #555; font-weight: 600; white-space: nowrap;'
_TD = 'padding: 3px 8px; border: 1px solid #ddd; white-space: nowrap;'


# -- snapshot access -------------------------------------------------------------------------
def executors(snapshot: dict) -> list[dict]:
    return list(snapshot.get('executors') or [])


def shards(executor: dict) -> list[list[dict]]:
    return [list(s.get('replicas') or []) for s in executor.get('shards') or []]


def state_word(snapshot: dict) -> str:
    return 'running' if snapshot.get('running') else 'stopped'


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _table(rows: Sequence[Sequence[str]], indent: str = '') -> list[str]:
    """Left-aligned columns, two spaces apart, no trailing spaces."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return [(indent + '  '.join(c.ljust(widths[i]) for i, c in enumerate(r))).rstrip()
            for r in rows]


def _title(kind: str, snapshot: dict) -> str:
    return f'{kind}: {snapshot.get("name", "?")} ({state_word(snapshot)})'


# -- topology (polling fan-out) --------------------------------------------------------------
def replica_cell_text(replica: dict) -> str:
    """`served (outstanding)`, then failures / restarts / a state other than ready."""
    if replica.get('external'):
        cell = f'{_int(replica.get("served"))} ({_int(replica.get("outstanding"))}) ext'
    else:
        cell = f'{_int(replica.get("served"))} ({_int(replica.get("outstanding"))})'
    notes = []
    if _int(replica.get('failures')):
        notes.append(f'{replica["failures"]} failed')
    if _int(replica.get('restarts')):
        notes.append(f'{replica["restarts"]} restart{"s" if replica["restarts"] > 1 else ""}')
    state = replica.get('state')
    if state not in (None, 'ready', 'external'):
        notes.append(str(state))
    return cell + (f' [{", ".join(notes)}]' if notes else '')


def route_text(route: dict) -> str:
    """`/search  indexer  ALL -> shard 0 rep 1, shard 1 rep 0`."""
    shards_ = route.get('shards') or []
    replicas = route.get('replicas') or []
    targets = ', '.join(f'shard {s} rep {r}' for s, r in zip(shards_, replicas)) or 'no replica'
    if len(replicas) < len(shards_):
        targets += f' ({len(shards_) - len(replicas)} shard(s) failed)'
    return f'{route.get("polling", "?")} -> {targets}'


def topology_text(snapshot: dict, max_routes: int = MAX_ROUTES_TEXT) -> str:
    n = _int(snapshot.get('requests'))
    lines = [f'{_title("TopologyView", snapshot)}, {n} request{"" if n == 1 else "s"}']
    for executor in executors(snapshot):
        grid = shards(executor)
        width = max((len(r) for r in grid), default=0)
        lines.append(f'{executor.get("name")}: {len(grid)} shard{"s" if len(grid) != 1 else ""} '
                     f'x {width} replica{"s" if width != 1 else ""}, served (outstanding)')
        rows = [[''] + [f'rep {r}' for r in range(width)]]
        for s, replicas in enumerate(grid):
            rows.append([f'shard {s}'] + [replica_cell_text(rep) for rep in replicas])
        lines += _table(rows, indent='  ')
    routes = list(snapshot.get('recent_routes') or [])[-max_routes:]
    if routes:
        lines.append('last routes (oldest first):')
        lines += _table([[r.get('endpoint', '?'), r.get('executor', '?'), route_text(r)]
                         for r in routes], indent='  ')
    else:
        lines.append('no requests routed yet')
    return '\n'.join(lines)


def _heat(served: int, most: int) -> str:
    """Background for a replica cell: a blue scale by share of the busiest replica."""
    if most <= 0 or served <= 0:
        return '#f7f7f7'
    share = served / most
    light = 95 - int(share * 17)  # 95% (almost white) .. 78%: dark text stays readable
    return f'hsl(210, 80%, {light}%)'


def _replica_td(s: int, r: int, replica: dict, most: int, last: set, live: bool) -> str:
    served, outstanding = _int(replica.get('served')), _int(replica.get('outstanding'))
    failures, restarts = _int(replica.get('failures')), _int(replica.get('restarts'))
    state = str(replica.get('state') or '')
    border = '2px solid #e8710a' if (s, r) in last else '1px solid #ddd'
    color = '#b00020' if state not in ('', 'ready', 'external') else '#222'
    extra = []
    if outstanding:
        extra.append(f'<span style="color:#e8710a">{outstanding} in flight</span>')
    if failures:
        extra.append(f'<span style="color:#b00020">{failures} failed</span>')
    if restarts:
        extra.append(f'{restarts} restart{"s" if restarts > 1 else ""}')
    if state not in ('', 'ready'):
        extra.append(escape(state))
    if live:
        where = replica.get('address') if replica.get('external') else (
            f':{replica["port"]}' if replica.get('port') else '')
        bits = ([f'pid {replica["pid"]}'] if replica.get('pid') else []) + ([where] if where else [])
        if bits:
            extra.append(f'<span style="color:#666">{escape(" · ".join(map(str, bits)))}</span>')
    title = f' title="shard {s} replica {r}: {served} served, {outstanding} in flight"'
    return (f'<td data-shard="{s}" data-replica="{r}" data-served="{served}" '
            f'data-outstanding="{outstanding}" data-failures="{failures}"{title} '
            f'style="{_TD} border: {border}; background: {_heat(served, most)}; color: {color}; '
            f'min-width: 76px; vertical-align: top;">'
            f'<div style="font-size: 18px; font-weight: 600;">{served}</div>'
            f'<div style="font-size: 11px; color: #555;">{"<br>".join(extra) or "idle"}</div></td>')


def _last_route_cells(snapshot: dict, executor: str) -> set:
    for route in reversed(snapshot.get('recent_routes') or []):
        if route.get('executor') == executor:
            return set(zip(route.get('shards') or [], route.get('replicas') or []))
    return set()


def _clock_time(route: dict) -> str:
    """When the gateway routed the request, as local time of day (live view only)."""
    t = route.get('time')
    if not isinstance(t, (int, float)):
        return ''
    return time.strftime('%H:%M:%S', time.localtime(t)) + f'.{int(t * 1000) % 1000:03d}'


def topology_html(snapshot: dict, *, live: bool = False,
                  max_routes: int = MAX_ROUTES_HTML) -> str:
    head = (f'<div style="font-weight:600; font-size:14px;">{escape(str(snapshot.get("name")))}'
            f' <span style="font-weight:400; color:#555">· {state_word(snapshot)} · '
            f'<span data-requests="{_int(snapshot.get("requests"))}">'
            f'{_int(snapshot.get("requests"))}</span> '
            f'request{"" if _int(snapshot.get("requests")) == 1 else "s"}'
            + (f' · {escape(str(snapshot.get("address")))}' if live and snapshot.get('address')
               else '') + '</span></div>')
    parts = [f'<div class="nborch-topology" style="{_FONT}">', head]
    for executor in executors(snapshot):
        name = str(executor.get('name'))
        grid = shards(executor)
        width = max((len(r) for r in grid), default=0)
        most = max((_int(rep.get('served')) for reps in grid for rep in reps), default=0)
        last = _last_route_cells(snapshot, name)
        needs = [n for n in executor.get('needs') or [] if n != 'gateway']
        after = f' <span style="color:#777">after {escape(", ".join(needs))}</span>' if needs else ''
        parts.append(f'<div style="margin-top:6px;"><b>{escape(name)}</b>{after} '
                     f'<span style="color:#777">{len(grid)} shard(s) × {width} replica(s); '
                     'served per replica, orange: last request</span></div>')
        parts.append(f'<table class="nborch-grid" data-executor="{escape(name)}" style="{_TABLE}">')
        parts.append('<tr><th style="' + _TH + '"></th>'
                     + ''.join(f'<th style="{_TH}">rep {r}</th>' for r in range(width)) + '</tr>')
        for s, replicas in enumerate(grid):
            parts.append(f'<tr><th style="{_TH}">shard {s}</th>'
                         + ''.join(_replica_td(s, r, rep, most, last, live)
                                   for r, rep in enumerate(replicas)) + '</tr>')
        parts.append('</table>')
    routes = list(snapshot.get('recent_routes') or [])[-max_routes:]
    if routes:
        parts.append(f'<div style="color:#555; margin-top:4px;">last requests (newest first)</div>'
                     f'<table class="nborch-routes" style="{_TABLE} {_MONO} font-size:12px; '
                     'line-height:1.25;">')
        for route in reversed(routes):
            polling = str(route.get('polling', '?'))
            badge = '#1a73e8' if polling == 'ALL' else '#188038'
            parts.append(
                f'<tr><td style="padding:0 8px;">{escape(str(route.get("endpoint")))}</td>'
                f'<td style="padding:0 8px;">{escape(str(route.get("executor")))}</td>'
                f'<td style="padding:0 8px; color:{badge}; font-weight:600;">{escape(polling)}</td>'
                f'<td style="padding:0 8px;">{escape(route_text(route).split(" -> ", 1)[1])}</td>'
                + (f'<td style="padding:0 8px; color:#777;">{_clock_time(route)}</td>' if live else '')
                + '</tr>')
        parts.append('</table>')
    else:
        parts.append('<div style="color:#777">no requests routed yet</div>')
    parts.append('</div>')
    return ''.join(parts)


# -- GPU allocation --------------------------------------------------------------------------
def _device(value: Any, missing: str) -> str:
    return missing if value in (None, '') else str(value)


def gpu_rows(snapshot: dict) -> list[tuple[str, int, int, str, str]]:
    """(executor, shard, replica, assigned, seen) for every replica."""
    rows = []
    for executor in executors(snapshot):
        for s, replicas in enumerate(shards(executor)):
            for r, rep in enumerate(replicas):
                if rep.get('external'):
                    rows.append((str(executor.get('name')), s, r, 'external', 'external'))
                    continue
                gpu = rep.get('gpu') or {}
                rows.append((str(executor.get('name')), s, r, _device(gpu.get('assigned'), '-'),
                             _device(gpu.get('seen'), '(unset)')))
    return rows


def gpu_text(snapshot: dict) -> str:
    rows = gpu_rows(snapshot)
    lines = [_title('GpuTable', snapshot)]
    if not rows:
        return '\n'.join(lines + ['no replicas'])
    if all(r[3] in ('-', 'external') for r in rows):
        lines.append('no CUDA_VISIBLE_DEVICES=RR round robin: replicas see the default devices')
    lines += _table([('executor', 'shard', 'replica', 'assigned', 'seen')]
                    + [(e, str(s), str(r), a, v) for e, s, r, a, v in rows])
    return '\n'.join(lines)


def gpu_html(snapshot: dict, *, live: bool = False) -> str:
    rows = gpu_rows(snapshot)
    parts = [f'<div class="nborch-gpus" style="{_FONT}">',
             f'<div style="font-weight:600; font-size:14px;">{escape(str(snapshot.get("name")))}'
             f' <span style="font-weight:400; color:#555">· GPU allocation · '
             f'{state_word(snapshot)}</span></div>']
    if not rows:
        return ''.join(parts + ['<div style="color:#777">no replicas</div></div>'])
    heads = ('executor', 'shard', 'replica', 'assigned device', 'process sees') + \
        (('pid',) if live else ())
    parts.append(f'<table class="nborch-gpu-table" style="{_TABLE}"><tr>'
                 + ''.join(f'<th style="{_TH}">{h}</th>' for h in heads) + '</tr>')
    pids = [rep.get('pid') for ex in executors(snapshot) for reps in shards(ex) for rep in reps]
    for (e, s, r, assigned, seen), pid in zip(rows, pids):
        ok = assigned == seen or (assigned == '-' and seen == '(unset)')
        seen_style = '' if ok or assigned == 'external' else ' color:#b00020; font-weight:600;'
        parts.append(f'<tr data-executor="{escape(e)}" data-shard="{s}" data-replica="{r}">'
                     f'<td style="{_TD}">{escape(e)}</td><td style="{_TD}">{s}</td>'
                     f'<td style="{_TD}">{r}</td>'
                     f'<td style="{_TD} {_MONO}" data-assigned="{escape(assigned)}">'
                     f'{escape(assigned)}</td>'
                     f'<td style="{_TD} {_MONO}{seen_style}" data-seen="{escape(seen)}">'
                     f'{escape(seen)}</td>'
                     + (f'<td style="{_TD} color:#777;">{pid or ""}</td>' if live else '')
                     + '</tr>')
    parts.append('</table></div>')
    return ''.join(parts)


# -- Raft ------------------------------------------------------------------------------------
RAFT_COLUMNS = ('role', 'member', 'term', 'leader', 'commit', 'applied', 'lag')


def member_of(state: dict) -> str:
    """voter, learner (joining: catching up before its promotion) or removed, as this
    replica's own log says."""
    me = state.get('id')
    if me in (state.get('voters') or ()):
        return 'voter'
    if me in (state.get('learners') or ()):
        return 'learner'
    return 'removed' if 'voters' in state else '?'


def raft_rows(executor: dict) -> list[tuple[int, int, dict | None, int | None]]:
    """(shard, replica, raft dict or None, lag) per replica; lag = the shard's commit index
    (the leader's, else the highest any replica reports) minus this replica's applied index."""
    rows = []
    for s, replicas in enumerate(shards(executor)):
        states = [rep.get('raft') if isinstance(rep.get('raft'), dict) else None
                  for rep in replicas]
        leaders = [st for st in states if st and st.get('role') == 'leader']
        commits = [_int(st.get('commit')) for st in (leaders or [st for st in states if st])]
        top = max(commits, default=None)
        for r, st in enumerate(states):
            lag = None if st is None or top is None else max(top - _int(st.get('applied')), 0)
            rows.append((s, r, st, lag))
    return rows


def leader_label(executor: dict, shard: int, leader: Any) -> str:
    """The leader as `rep N` when a replica of the shard reports that node id, else the id."""
    if leader in (None, 0, ''):
        return '-'
    grid = shards(executor)
    for r, rep in enumerate(grid[shard] if shard < len(grid) else []):
        raft = rep.get('raft')
        if isinstance(raft, dict) and raft.get('id') == leader:
            return f'rep {r}'
    return str(leader)


def is_stateful(executor: dict) -> bool:
    return any(st is not None for _, _, st, _ in raft_rows(executor))


def raft_text(snapshot: dict) -> str:
    lines = [_title('RaftView', snapshot)]
    for executor in executors(snapshot):
        name = str(executor.get('name'))
        if not is_stateful(executor):
            lines.append(f'{name}: not stateful')
            continue
        rows = [('shard', 'replica') + RAFT_COLUMNS]
        for s, r, st, lag in raft_rows(executor):
            if st is None:
                rows.append((str(s), str(r), 'unknown'))
                continue
            rows.append((str(s), str(r), str(st.get('role', '?')), member_of(st),
                         str(st.get('term', '?')),
                         leader_label(executor, s, st.get('leader')), str(st.get('commit', '?')),
                         str(st.get('applied', '?')), str(lag)))
        lines.append(f'{name}:')
        lines += _table(rows, indent='  ')
    if len(lines) == 1:
        lines.append('no executors')
    return '\n'.join(lines)


_ROLE_COLOR = {'leader': '#188038', 'follower': '#1a73e8', 'candidate': '#e8710a',
               'pre-candidate': '#e8710a', 'precandidate': '#e8710a'}


def raft_html(snapshot: dict, *, live: bool = False) -> str:
    parts = [f'<div class="nborch-raft" style="{_FONT}">',
             f'<div style="font-weight:600; font-size:14px;">{escape(str(snapshot.get("name")))}'
             f' <span style="font-weight:400; color:#555">· Raft · {state_word(snapshot)}'
             '</span></div>']
    for executor in executors(snapshot):
        name = escape(str(executor.get('name')))
        if not is_stateful(executor):
            parts.append(f'<div data-executor="{name}" data-stateful="false"><b>{name}</b>: '
                         '<span style="color:#777">not stateful</span></div>')
            continue
        label = f'<div><b>{name}</b></div>' if len(executors(snapshot)) > 1 else ''
        parts.append(f'{label}<table class="nborch-raft-table" '
                     f'data-executor="{name}" style="{_TABLE}"><tr>'
                     + ''.join(f'<th style="{_TH}">{h}</th>' for h in ('shard', 'replica') + RAFT_COLUMNS)
                     + '</tr>')
        for s, r, st, lag in raft_rows(executor):
            if st is None:
                parts.append(f'<tr><td style="{_TD}">{s}</td><td style="{_TD}">{r}</td>'
                             f'<td style="{_TD}" colspan="{len(RAFT_COLUMNS)}">unknown</td></tr>')
                continue
            role = str(st.get('role', '?'))
            cells = [member_of(st), escape(str(st.get('term', '?'))),
                     escape(leader_label(executor, s, st.get('leader'))),
                     escape(str(st.get('commit', '?'))), escape(str(st.get('applied', '?')))]
            lag_style = ' color:#b00020; font-weight:600;' if lag else ''
            parts.append(
                f'<tr data-shard="{s}" data-replica="{r}" data-role="{escape(role)}">'
                f'<td style="{_TD}">{s}</td><td style="{_TD}">{r}</td>'
                f'<td style="{_TD} color:{_ROLE_COLOR.get(role, "#222")}; font-weight:600;">'
                f'{escape(role)}</td>'
                + ''.join(f'<td style="{_TD}">{c}</td>' for c in cells)
                + f'<td style="{_TD}{lag_style}">{lag}</td></tr>')
        parts.append('</table>')
    parts.append('</div>')
    return ''.join(parts)


def any_gpu(snapshot: dict) -> bool:
    return any(a not in ('-', 'external') for _, _, _, a, _ in gpu_rows(snapshot))


def any_raft(snapshot: dict) -> bool:
    return any(is_stateful(e) for e in executors(snapshot))


def join_text(parts: Iterable[str]) -> str:
    return '\n\n'.join(p for p in parts if p)
