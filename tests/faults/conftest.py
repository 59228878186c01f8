"""Collects the fault campaign's figures and reports them once per run: in the terminal
summary, and as JSON in the run's base temp dir (and at $NBORCH_FAULT_REPORT if set)."""
from __future__ import annotations

import json
import os
from collections import Counter

from tests.faults.figures import SCHEDULES


def totals(schedules: list[dict]) -> dict:
    faults: Counter[str] = Counter()
    for s in schedules:
        faults.update(s['faults_injected'])
    return {
        'schedules_run': len(schedules),
        'seeds': [s['seed'] for s in schedules],
        'writes_checked': sum(s['writes_checked'] for s in schedules),
        'writes_acknowledged': sum(s['acked'] for s in schedules),
        'indeterminate_applied': sum(s['indeterminate_applied'] for s in schedules),
        'indeterminate_absent': sum(s['indeterminate_absent'] for s in schedules),
        'linearizable_reads_checked': sum(s['reads_checked'] for s in schedules),
        'faults_injected': dict(sorted(faults.items())),
        'anomalies_found': sum(len(s['anomalies']) for s in schedules),
        'anomalies': [f'seed {s["seed"]}: {a}' for s in schedules for a in s['anomalies']],
        'schedules': schedules,
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not SCHEDULES:
        return
    figures = totals(SCHEDULES)
    factory = getattr(config, '_tmp_path_factory', None)  # pytest's tmp_path plugin
    paths = [os.path.join(str(factory.getbasetemp()), 'fault-campaign.json')] if factory else []
    if os.environ.get('NBORCH_FAULT_REPORT'):
        paths.append(os.environ['NBORCH_FAULT_REPORT'])
    for path in paths:
        with open(path, 'w') as f:
            json.dump(figures, f, indent=2)
    write = terminalreporter.write_line
    terminalreporter.section('fault campaign')
    for key in ('schedules_run', 'seeds', 'writes_checked', 'writes_acknowledged',
                'indeterminate_applied', 'indeterminate_absent', 'linearizable_reads_checked',
                'faults_injected', 'anomalies_found'):
        write(f'{key}: {figures[key]}')
    for line in figures['anomalies'][:20]:
        write(f'  {line}')
    write(f'figures written to {", ".join(paths)}')
