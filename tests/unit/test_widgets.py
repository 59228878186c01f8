"""Widgets built from canned status dicts (no processes), the coalescing writer on a fake
clock, and compare()'s setup handling with a fake Deployment."""
from __future__ import annotations

import copy
import re
import threading

import pytest

from nborch.widgets import (Dashboard, GpuTable, QpsChart, RaftView, SetupFigures,
                            TopologyView, show)
from nborch.widgets import _render
from nborch.widgets._chart import render_png
from nborch.widgets._live import Coalescer, Writer


def replica(r, served=0, outstanding=0, failures=0, state='ready', restarts=0, gpu=None,
            raft=None, port=40000):
    rep = {'replica': r, 'pid': 31000 + r, 'port': port + r, 'address': f'127.0.0.1:{port + r}',
           'state': state, 'restarts': restarts, 'gpu': gpu or {'assigned': None, 'seen': None},
           'served': served, 'outstanding': outstanding, 'failures': failures}
    if raft is not None:
        rep['raft'] = raft
    return rep


def snapshot(grid=((4, 3, 3), (4, 3, 3)), routes=None, running=True, **replica_kwargs):
    """A status dict like Serving.status(): `grid[s][r]` is the served count."""
    shards = [{'shard': s, 'replicas': [replica(r, served=n, port=40000 + 10 * s, **replica_kwargs)
                                        for r, n in enumerate(row)]}
              for s, row in enumerate(grid)]
    return {'name': 'indexer', 'address': '127.0.0.1:51234', 'running': running,
            'gateway': {'pid': 30999, 'alive': running},
            'requests': sum(map(sum, grid)),
            'executors': [{'name': 'indexer', 'needs': ['gateway'], 'shards': shards}],
            'recent_routes': routes if routes is not None else [
                {'endpoint': '/custom', 'executor': 'indexer', 'polling': 'ALL',
                 'shards': [0, 1], 'replicas': [2, 2], 'time': 1795418581.43},
                {'endpoint': '/search', 'executor': 'indexer', 'polling': 'ANY',
                 'shards': [1], 'replicas': [0], 'time': 1795418581.44}]}


VOLATILE = ('31000', '40000', '40001', '51234', '127.0.0.1', '1795418581', 'pid', 'port')


# -- TopologyView ----------------------------------------------------------------------------
def test_topology_text_is_stable_and_has_the_counts():
    snap = snapshot()
    text = TopologyView(snap).text()
    assert text == _render.topology_text(copy.deepcopy(snap))  # same input, same text
    assert text.splitlines()[:5] == [
        'TopologyView: indexer (running), 20 requests',
        'indexer: 2 shards x 3 replicas, served (outstanding)',
        '           rep 0  rep 1  rep 2',
        '  shard 0  4 (0)  3 (0)  3 (0)',
        '  shard 1  4 (0)  3 (0)  3 (0)',
    ]
    assert '/custom  indexer  ALL -> shard 0 rep 2, shard 1 rep 2' in text
    assert '/search  indexer  ANY -> shard 1 rep 0' in text
    for word in VOLATILE:
        assert word not in text


def test_topology_text_notes_failures_restarts_and_states():
    snap = snapshot(grid=((1, 2),))
    rep0 = snap['executors'][0]['shards'][0]['replicas'][0]
    rep0.update(failures=1, restarts=1, state='restarting', outstanding=2)
    text = TopologyView(snap).text()
    assert '1 (2) [1 failed, 1 restart, restarting]' in text


def test_topology_html_has_the_grid_and_no_volatile_values_unless_live():
    snap = snapshot()
    html = _render.topology_html(snap)
    assert html.count('<table class="nborch-grid"') == 1
    cells = re.findall(r'data-shard="(\d)" data-replica="(\d)" data-served="(\d+)"', html)
    assert cells == [('0', '0', '4'), ('0', '1', '3'), ('0', '2', '3'),
                     ('1', '0', '4'), ('1', '1', '3'), ('1', '2', '3')]
    assert 'nborch-routes' in html and '/custom' in html
    for word in VOLATILE:
        assert word not in html
    live = _render.topology_html(snap, live=True)
    assert 'pid 31000' in live and '127.0.0.1:51234' in live


def test_view_mimebundle_has_plain_html_and_widget():
    view = TopologyView(snapshot())
    bundle = view._repr_mimebundle_()
    assert bundle['text/plain'] == view.text() == repr(view)
    assert bundle['text/html'] == view.html(live=False)
    assert 'model_id' in bundle['application/vnd.jupyter.widget-view+json']
    assert 'data-served="4"' in view.children[0].value  # the live widget shows the counts
    view.close()


def test_no_routes_yet():
    text = TopologyView(snapshot(grid=((0,),), routes=[])).text()
    assert text.endswith('no requests routed yet')


def test_external_replicas_show_no_address():
    snap = snapshot(grid=((2, 1),))
    for rep in snap['executors'][0]['shards'][0]['replicas']:
        rep.update(external=True, state='external')
    text = TopologyView(snap).text()
    assert '2 (0) ext' in text and '127.0.0.1' not in text


# -- GpuTable --------------------------------------------------------------------------------
def test_gpu_table_lists_assigned_and_seen():
    snap = snapshot(grid=((0, 0, 0, 0, 0),))
    for r, rep in enumerate(snap['executors'][0]['shards'][0]['replicas']):
        rep['gpu'] = {'assigned': str(r % 3), 'seen': str(r % 3)}
    snap['executors'][0]['shards'][0]['replicas'][4]['gpu']['seen'] = '0'  # a mismatch
    table = GpuTable(snap)
    lines = table.text().splitlines()
    assert lines[0] == 'GpuTable: indexer (running)'
    assert lines[1].split() == ['executor', 'shard', 'replica', 'assigned', 'seen']
    assert [line.split()[3:] for line in lines[2:]] == [
        ['0', '0'], ['1', '1'], ['2', '2'], ['0', '0'], ['1', '0']]
    html = table.html()
    assert html.count('data-assigned=') == 5 and '31000' not in html
    assert '31004' in _render.gpu_html(snap, live=True)  # the live widget shows pids
    assert 'color:#b00020' in html  # the mismatch is flagged
    assert _render.any_gpu(snap)


def test_gpu_table_without_round_robin():
    text = GpuTable(snapshot(grid=((0,),))).text()
    assert 'no CUDA_VISIBLE_DEVICES=RR round robin' in text
    assert text.splitlines()[-1].split() == ['indexer', '0', '0', '-', '(unset)']


# -- RaftView --------------------------------------------------------------------------------
def test_raft_view_not_stateful():
    view = RaftView(snapshot())
    assert view.text() == 'RaftView: indexer (running)\nindexer: not stateful'
    assert 'data-stateful="false"' in view.html()


def test_raft_view_roles_leader_and_lag():
    snap = snapshot(grid=((0, 0, 0),))
    group = {'voters': [1, 2], 'learners': [3]}  # replica 2 joins: catching up, not voting
    states = [{'id': 1, 'role': 'follower', 'term': 2, 'leader': 2, 'commit': 9, 'applied': 7},
              {'id': 2, 'role': 'leader', 'term': 2, 'leader': 2, 'commit': 10, 'applied': 10},
              {'id': 3, 'role': 'follower', 'term': 2, 'leader': 2, 'commit': 10, 'applied': 4}]
    for rep, st in zip(snap['executors'][0]['shards'][0]['replicas'], states):
        rep['raft'] = {**st, **group}
    text = RaftView(snap).text()
    rows = [line.split() for line in text.splitlines()[2:]]
    assert rows[0] == ['shard', 'replica', 'role', 'member', 'term', 'leader', 'commit',
                       'applied', 'lag']
    assert rows[1] == ['0', '0', 'follower', 'voter', '2', 'rep', '1', '9', '7', '3']
    assert rows[2] == ['0', '1', 'leader', 'voter', '2', 'rep', '1', '10', '10', '0']
    assert rows[3] == ['0', '2', 'follower', 'learner', '2', 'rep', '1', '10', '4', '6']
    assert _render.member_of({'id': 4, 'voters': [1, 2, 3], 'learners': []}) == 'removed'
    assert 'data-role="leader"' in RaftView(snap).html()
    assert _render.any_raft(snap)


# -- show ------------------------------------------------------------------------------------
def test_show_picks_the_views_that_apply():
    plain = show(snapshot())
    assert [type(v) for v in plain.views] == [TopologyView]
    snap = snapshot(grid=((0, 0),))
    for rep in snap['executors'][0]['shards'][0]['replicas']:
        rep['gpu'] = {'assigned': '0', 'seen': '0'}
        rep['raft'] = {'id': 1, 'role': 'leader', 'term': 1, 'leader': 1, 'commit': 1, 'applied': 1}
    full = show(snap)
    assert [type(v) for v in full.views] == [TopologyView, GpuTable, RaftView]
    assert repr(full).count('\n\n') == 2
    assert show(snap, views=('raft',)).views[0].text().startswith('RaftView')
    with pytest.raises(ValueError, match='unknown view'):
        show(snap, views=('nope',))


# -- QpsChart --------------------------------------------------------------------------------
def test_chart_png_html_and_stable_text():
    chart = QpsChart('QPS', setups=('replicas=1', 'replicas=3', 'replicas=3 stateful'))
    chart.set('replicas=1', index_s=0.31, search_s=0.4, qps=125.0, done=True)
    chart.set('replicas=3', index_s=0.35, qps=200.0)
    chart.set('replicas=3 stateful', error='stateful=True not available yet')
    chart.flush()
    assert bytes(chart.image.value).startswith(b'\x89PNG')
    assert chart.text() == ('QpsChart: QPS\n  replicas=1: done\n  replicas=3: running\n'
                            '  replicas=3 stateful: n/a (stateful=True not available yet)')
    bundle = chart._repr_mimebundle_()
    assert bundle['text/plain'] == chart.text()
    assert '<img' in bundle['text/html'] and 'data:image/png;base64,' in bundle['text/html']
    chart.close()


def test_render_png_is_a_png_for_empty_and_full_inputs():
    assert render_png([], 'empty').startswith(b'\x89PNG')
    png = render_png([SetupFigures('a', 1.0, 2.0, 3.0, True)], 'one')
    assert png.startswith(b'\x89PNG') and len(png) > 1000


# -- coalescing writer -----------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_coalescer_draws_at_most_10_per_second_under_1000_updates():
    clock = FakeClock()
    drawn: list[tuple[float, int]] = []
    coalescer = Coalescer(lambda v: drawn.append((clock.now, v)), max_hz=10, clock=clock,
                          sleep=clock.sleep)
    for i in range(1000):        # 1000 updates, 1 ms apart: one second of fake time
        coalescer.submit(i)
        coalescer.pump()
        clock.now += 0.001
    coalescer.flush()
    times = [t for t, _ in drawn]
    assert len(drawn) <= 11      # 0.0, 0.1, ..., 0.9 and the final flush at 1.0
    assert all(b - a >= 0.1 - 1e-9 for a, b in zip(times, times[1:]))
    for start in times:          # no one-second window holds more than 10 draws
        assert sum(1 for t in times if start <= t < start + 1.0) <= 10
    assert drawn[-1][1] == 999   # the newest value is what ends up drawn
    assert coalescer.submitted == 1000 and coalescer.draws == len(drawn)


def test_coalescer_keeps_only_the_newest_value():
    clock = FakeClock()
    drawn = []
    coalescer = Coalescer(drawn.append, max_hz=10, clock=clock, sleep=clock.sleep)
    coalescer.submit('a')
    assert coalescer.pump() and drawn == ['a']
    coalescer.submit('b')
    coalescer.submit('c')
    assert not coalescer.pump()  # too soon
    assert coalescer.due_in() == pytest.approx(0.1)
    assert coalescer.flush() and drawn == ['a', 'c']
    assert coalescer.due_in() is None and not coalescer.flush()


class FakeOrchestration:
    """status() from canned snapshots; `running` flips off to end the watch."""

    def __init__(self, snap: dict):
        self.snap = snap
        self.running = True
        self.calls = 0
        self.polled = threading.Event()

    def status(self) -> dict:
        self.calls += 1
        if self.calls >= 3:
            self.polled.set()
        return copy.deepcopy(self.snap)


def test_view_watches_until_the_orchestration_stops():
    orchestration = FakeOrchestration(snapshot(grid=((1, 0),)))
    view = TopologyView(orchestration, interval=0.01)
    assert view.watching
    changes = []
    view.children[0].observe(lambda change: changes.append(change['new']), 'value')
    assert orchestration.polled.wait(5)
    assert changes == []  # same snapshot polled again: nothing redrawn, no widget messages
    orchestration.snap = snapshot(grid=((5, 2),))
    orchestration.polled.clear()
    orchestration.calls = 0
    assert orchestration.polled.wait(5)
    orchestration.running = False
    view._watch.writer._thread.join(5)
    assert not view.watching
    assert view.text().startswith('TopologyView: indexer (stopped), 7 requests')
    assert '5 (0)  2 (0)' in view.text()
    assert any('data-served="5"' in value for value in changes)
    view.close()


class StoppingOrchestration(FakeOrchestration):
    """Once `stopping`, it stops while its status is taken, and that status misses the
    counts (the processes went away under it)."""

    stopping = False

    def status(self) -> dict:
        if not self.stopping:
            return super().status()
        self.running = False
        return snapshot(grid=((0, 0),))


def test_a_status_taken_while_stopping_does_not_replace_the_last_counts():
    orchestration = StoppingOrchestration(snapshot(grid=((3, 3),)))
    view = TopologyView(orchestration, watch=False)
    orchestration.stopping = True
    view.refresh()
    assert view.text().startswith('TopologyView: indexer (stopped), 6 requests')
    assert '3 (0)  3 (0)' in view.text()
    view.close()


def test_closing_a_view_stops_its_poller():
    orchestration = FakeOrchestration(snapshot())
    view = TopologyView(orchestration, interval=0.01)
    assert orchestration.polled.wait(5)
    view.close()
    assert not view.watching
    calls = orchestration.calls
    assert view._watch.closed.is_set() and orchestration.calls == calls


def test_a_view_without_watch_changes_only_on_refresh():
    orchestration = FakeOrchestration(snapshot(grid=((1, 0),)))
    view = TopologyView(orchestration, watch=False)
    assert not view.watching and orchestration.calls == 1
    orchestration.snap = snapshot(grid=((4, 4),))
    assert view.text() == TopologyView(snapshot(grid=((1, 0),))).text()
    view.refresh()
    assert not view.watching  # drawn on this thread, no writer started
    assert '4 (0)  4 (0)' in view.text() and 'data-served="4"' in view.children[0].value
    view.close()


def test_dashboard_polls_once_for_all_its_views():
    snap = snapshot(grid=((0, 0),))
    for rep in snap['executors'][0]['shards'][0]['replicas']:
        rep['gpu'] = {'assigned': '0', 'seen': '0'}
    orchestration = FakeOrchestration(snap)
    dash = Dashboard(orchestration, interval=0.01)
    assert [type(v) for v in dash.views] == [TopologyView, GpuTable]
    assert not any(v.watching for v in dash.views) and dash.watching
    assert orchestration.polled.wait(5)
    dash.close()
    assert not dash.watching


def test_writer_without_poll_drains_and_ends_when_idle():
    drawn = []
    done = threading.Event()
    coalescer = Coalescer(lambda v: (drawn.append(v), done.set()), max_hz=1000)
    writer = Writer(coalescer, idle_exit=0.01)
    coalescer.submit(1)
    writer.kick()
    assert done.wait(5) and drawn == [1]
    writer._thread and writer._thread.join(5)
    assert not writer.alive
    done.clear()
    coalescer.submit(2)
    writer.kick()                 # starts again after ending idle
    assert done.wait(5) and drawn == [1, 2]
    writer.stop()


# -- compare (no processes: a fake Deployment) -----------------------------------------------
def test_compare_setup_strings():
    from nborch.compare import Setup
    assert Setup.parse('replicas=3 stateful') == Setup('replicas=3 stateful', 3, 1, True)
    assert Setup.parse('shards=2, replicas=2') == Setup('shards=2, replicas=2', 2, 2, False)
    with pytest.raises(ValueError, match="cannot read 'replica=3'"):
        Setup.parse('replica=3')


def test_compare_raises_what_a_deployment_raises(monkeypatch):
    import nborch.compare as compare_module

    class Broken:
        def __init__(self, **kwargs):
            raise TypeError('bad uses')

    monkeypatch.setattr(compare_module, 'Deployment', Broken)
    with pytest.raises(TypeError, match='bad uses'):
        compare_module.compare(docs=10, queries=2, setups=('replicas=1',), chart=False,
                               progress=False)
