"""The sweep's curves (benchmarks/sweep.py's rows) as one PNG, each next to its floor."""
from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

NBORCH, IN_PROCESS, FLOOR, EXTRA = '#d62728', '#1f77b4', '#7f7f7f', '#ff7f0e'


def _docs_panel(ax, rows: list[dict]) -> None:
    for replicas, style in ((1, '-'), (3, '--')):
        sub = [r for r in rows if r['replicas'] == replicas]
        ax.plot([r['docs'] for r in sub], [r['nborch_seq_ms'] for r in sub], style, marker='o',
                color=NBORCH, label=f'nborch, replicas={replicas}')
    one = [r for r in rows if r['replicas'] == 1]
    ax.plot([r['docs'] for r in one], [r['in_process_ms'] for r in one], marker='s',
            color=IN_PROCESS, label='same executor in-process')
    ax.plot([r['docs'] for r in one], [r['floor_ms'] for r in one], marker='^', color=FLOOR,
            label='numpy top_k floor')
    ax.set(xscale='log', yscale='log', xlabel='docs indexed', ylabel='ms per query (p50)',
           title='Search latency vs docs (1 query/request)')


def _replicas_panel(ax, rows: list[dict], cores: int) -> None:
    xs = [r['replicas'] for r in rows]
    ax.plot(xs, [r['qps'] for r in rows], marker='o', color=NBORCH, label='nborch QPS')
    one_core = rows[0]['in_process_qps']
    ax.plot(xs, [one_core * min(x, cores) for x in xs], '--', color=IN_PROCESS,
            label=f'in-process QPS x min(replicas, {cores} cores)')
    ax.set(xlabel='replicas', ylabel='queries per second', xticks=xs,
           title=f"Search QPS vs replicas ({rows[0]['docs']} docs)")


def _shards_panel(ax, rows: list[dict]) -> None:
    xs = [r['shards'] for r in rows]
    ax.plot(xs, [r['nborch_seq_ms'] for r in rows], marker='o', color=NBORCH,
            label='nborch, sequential')
    ax.plot(xs, [r['nborch_pipelined_ms'] for r in rows], ':', marker='o', color=NBORCH,
            label='nborch, pipelined (ms/query)')
    ax.plot(xs, [r['in_process_ms'] for r in rows], marker='s', color=IN_PROCESS,
            label='in-process, all docs')
    ax.plot(xs, [r['floor_ms'] for r in rows], marker='^', color=FLOOR, label='floor, all docs')
    ax.set(xlabel='shards', ylabel='ms per query', xticks=xs, ylim=(0, None),
           title=f"Search vs shards ({rows[0]['docs']} docs, ALL + top-100 reduce)")


def _batch_panel(ax, rows: list[dict]) -> None:
    xs = [r['queries_per_request'] for r in rows]
    ax.plot(xs, [r['nborch_ms_per_query'] for r in rows], marker='o', color=NBORCH,
            label='nborch')
    ax.plot(xs, [r['in_process_ms_per_query'] for r in rows], marker='s', color=IN_PROCESS,
            label='in-process')
    ax.plot(xs, [r['floor_ms_per_query'] for r in rows], marker='^', color=FLOOR, label='floor')
    ax.set(xscale='log', yscale='log', xlabel='queries per request (100 matches each)',
           ylabel='ms per query', title=f"Search vs payload ({rows[0]['docs']} docs)")


def _echo_panel(ax, rows: list[dict]) -> None:
    xs = [r['docs_per_request'] for r in rows]
    for key, color, label in (('post_ms', NBORCH, 'Deployment.post'),
                              ('worker_ms', EXTRA, 'straight to the worker'),
                              ('codec_ms', FLOOR, 'codec encode+decode (floor)')):
        ax.plot(xs, [r[key] * 1000 / x for r, x in zip(rows, xs)], marker='o', color=color,
                label=label)
    ax.set(xscale='log', yscale='log', xlabel='docs per request (128-d TextDoc)',
           ylabel='us per doc', title='Echo vs payload')


def _cpu_panel(ax, rows: list[dict]) -> None:
    labels = [f"r={r['replicas']}" for r in rows]
    bottom = [0.0] * len(rows)
    for role, color in (('client', EXTRA), ('gateway', NBORCH), ('workers', IN_PROCESS)):
        values = [r['cpu_ms_per_query'][role] for r in rows]
        ax.bar(labels, values, bottom=bottom, color=color, label=role)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.axhline(rows[0]['in_process_qps'] and 1000 / rows[0]['in_process_qps'], color=FLOOR,
               linestyle='--', label='in-process ms/query')
    ax.set(ylabel='CPU ms per query', title='Where the cores go (pipelined)')


def plot(rows: dict, path: str, title: str) -> None:
    import os
    cores = os.cpu_count() or 1
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    panels = [(_docs_panel, rows['docs']), (_replicas_panel, rows['replicas']),
              (_shards_panel, rows['shards']), (_batch_panel, rows['batch']),
              (_echo_panel, rows['echo']), (_cpu_panel, rows['replicas'])]
    for ax, (draw, data) in zip(axes.flat, panels):
        if not data:
            ax.set_visible(False)
            continue
        draw(ax, data, cores) if draw is _replicas_panel else draw(ax, data)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
