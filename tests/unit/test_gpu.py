"""CUDA_VISIBLE_DEVICES=RR round robin (reference page "Replicate on multiple GPUs")."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nborch.runtime import gpu as gpu_module
from nborch.runtime.gpu import (
    RoundRobinSpec,
    assign_devices,
    count_devices,
    detect_device_count,
    parse_rr,
    replica_environments,
    run_nvidia_smi_list,
)

UUIDS = [f'GPU-0{c * 7}-74d2-7297-d557-12771b6a79d5' for c in 'abcd']  # the page's UUIDs


def rr_map(spec: str, replicas: int, device_count: int = 3, **kwargs) -> list[str | None]:
    parsed = parse_rr(spec)
    assert parsed is not None
    return assign_devices(parsed, replicas, device_count, **kwargs)


def test_public_names_are_exact():
    assert sorted(gpu_module.__all__) == [
        'CUDA_TOTAL_DEVICES',
        'CUDA_VISIBLE_DEVICES',
        'RoundRobinSpec',
        'assign_devices',
        'count_devices',
        'detect_device_count',
        'parse_rr',
        'replica_environments',
        'run_nvidia_smi_list',
    ]


# --- the maps of the reference page -----------------------------------------------------------


@pytest.mark.parametrize(
    ('spec', 'replicas', 'device_count', 'expected'),
    [
        ('RR', 5, 3, '0 1 2 0 1'),  # page table 1
        ('RR1:', 5, 3, '1 2 1 2 1'),
        ('RR0:2', 5, 3, '0 1 0 1 0'),  # page table 2
        ('RR1:2', 2, 3, '1 1'),
        ('RR2', 2, 3, '2 2'),
        ('RR0,2,3', 5, 4, '0 2 3 0 2'),
        ('RR1,3', 5, 4, '1 3 1 3 1'),  # page table 3 (device 3 exists: 4 devices)
        ('RR:2', 3, 3, '0 1 0'),
        ('RR::2', 5, 3, '0 2 0 2 0'),
        ('RR::2', 4, 8, '0 2 4 6'),
        ('RR1:3:1', 3, 3, '1 2 1'),
        ('RR:-1', 3, 3, '0 1 0'),
        ('RR::-1', 4, 3, '2 1 0 2'),
        ('RR[0:2]', 3, 3, '0 1 0'),
        ('RR[1:]', 3, 3, '1 2 1'),
        ('RR[2]', 2, 3, '2 2'),
        ('RR', 3, 1, '0 0 0'),
        ('RR', 2, 8, '0 1'),
        ('RR0', 3, 3, '0 0 0'),
        (' RR1: ', 2, 3, '1 2'),
        ('RR1, 2', 3, 3, '1 2 1'),
        ('RR01,2', 2, 3, '1 2'),
    ],
)
def test_maps(spec, replicas, device_count, expected):
    assert rr_map(spec, replicas, device_count) == expected.split()


def test_uuid_map_from_the_reference_page():
    spec = 'RR' + ','.join(UUIDS)
    expected = [UUIDS[0], UUIDS[1], UUIDS[2], UUIDS[3], UUIDS[0]]
    for device_count in (0, 1, 3, 4):
        assert rr_map(spec, 5, device_count) == expected


def test_short_uuid_map_of_the_spec():
    assert rr_map('RRGPU-a,GPU-b,GPU-c,GPU-d', 5) == ['GPU-a', 'GPU-b', 'GPU-c', 'GPU-d', 'GPU-a']


def test_mig_uuids():
    mig = ['MIG-4b3c2a1e-0000-1111-2222-333344445555', 'MIG-GPU-0aaaaaaa/1/0']
    assert rr_map('RR' + ','.join(mig), 3) == [mig[0], mig[1], mig[0]]
    assert rr_map('RR' + mig[0], 2) == [mig[0], mig[0]]


def test_one_replica_and_zero_replicas():
    assert rr_map('RR', 1) == ['0']
    assert rr_map('RR1,2', 0) == []
    assert rr_map('RR', 0, 0) == []


# --- device count 0 ---------------------------------------------------------------------------


@pytest.mark.parametrize('spec', ['RR', 'RR1:', 'RR0:2', 'RR::2', 'RR[0:2]', 'RR:-1'])
def test_forms_that_need_the_count_assign_nothing_without_devices(spec):
    assert rr_map(spec, 4, device_count=0) == [None] * 4
    assert parse_rr(spec).needs_device_count


@pytest.mark.parametrize(
    ('spec', 'expected'),
    [('RR2', ['2', '2', '2']), ('RR0,2,3', ['0', '2', '3']), ('RR1,3', ['1', '3', '1'])],
)
def test_explicit_lists_do_not_need_the_count(spec, expected):
    assert rr_map(spec, 3, device_count=0) == expected
    assert not parse_rr(spec).needs_device_count


# --- range checks -----------------------------------------------------------------------------


def test_explicit_index_beyond_the_count_is_an_error():
    with pytest.raises(ValueError, match=r"'RR1,3': device 3 does not exist, there are 3 devices"):
        rr_map('RR1,3', 5, 3)
    with pytest.raises(ValueError, match=r"devices 3, 4 do not exist, there are 3 devices"):
        rr_map('RR0,3,4', 5, 3)
    with pytest.raises(ValueError, match=r"'RR2': device 2 does not exist, there are 2 devices"):
        rr_map('RR2', 1, 2)
    one = r'device 1 does not exist, there is 1 device \(indexes 0..0\)'
    with pytest.raises(ValueError, match=one):
        rr_map('RR0,1', 2, 1)


def test_non_strict_passes_indexes_through_like_the_reference_system():
    # RR1,3 "with 3 devices" as 1,3,1,3,1 is the non-strict map.
    assert rr_map('RR1,3', 5, 3, strict=False) == '1 3 1 3 1'.split()


@pytest.mark.parametrize(('spec', 'device_count'), [('RR5:', 3), ('RR2:1', 3), ('RR[3:]', 3)])
def test_slice_selecting_nothing_is_an_error(spec, device_count):
    none_of_3 = r'selects no device, there are 3 devices \(indexes 0..2\)'
    with pytest.raises(ValueError, match=none_of_3):
        rr_map(spec, 2, device_count)


def test_slice_selecting_nothing_out_of_one_device():
    with pytest.raises(ValueError, match=r'selects no device, there is 1 device \(indexes 0..0\)'):
        rr_map('RR1:', 2, 1)


@pytest.mark.parametrize('count', [-1, 1.5, True, '3', None])
def test_bad_device_count(count):
    with pytest.raises(ValueError, match=r'invalid device_count=.*expected an integer >= 0'):
        rr_map('RR', 2, count)


@pytest.mark.parametrize('replicas', [-1, 2.0, False, '2'])
def test_bad_replicas(replicas):
    with pytest.raises(ValueError, match=r'invalid replicas=.*expected an integer >= 0'):
        assign_devices(parse_rr('RR'), replicas, 3)


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'value', ['', '0', '0,1', '1,3', 'GPU-abc', 'rr', 'rr1:', ' 0 ', 'all', '-1']
)
def test_values_without_the_prefix_are_not_round_robin(value):
    assert parse_rr(value) is None


@pytest.mark.parametrize(
    ('spec', 'parsed'),
    [
        ('RR', RoundRobinSpec('RR', window=(None, None, None))),
        ('RR1:', RoundRobinSpec('RR1:', window=(1, None, None))),
        ('RR0:2', RoundRobinSpec('RR0:2', window=(0, 2, None))),
        ('RR::2', RoundRobinSpec('RR::2', window=(None, None, 2))),
        ('RR-2:', RoundRobinSpec('RR-2:', window=(-2, None, None))),
        ('RR2', RoundRobinSpec('RR2', devices=('2',))),
        ('RR0,2,3', RoundRobinSpec('RR0,2,3', devices=('0', '2', '3'))),
        ('RRGPU-a,GPU-b', RoundRobinSpec('RRGPU-a,GPU-b', devices=('GPU-a', 'GPU-b'))),
        ('  RR1,3\n', RoundRobinSpec('RR1,3', devices=('1', '3'))),
    ],
)
def test_parsed_specs(spec, parsed):
    assert parse_rr(spec) == parsed


def test_uses_uuids():
    assert parse_rr('RRGPU-a').uses_uuids
    assert not parse_rr('RR1,2').uses_uuids
    assert not parse_rr('RR').uses_uuids


@pytest.mark.parametrize(
    ('spec', 'reason'),
    [
        ('RRx', "'x' is neither a device index nor a GPU-/MIG- UUID"),
        ('RRall', "'all' is neither a device index"),
        ('RR1:2:0', 'slice step cannot be zero'),
        ('RR::0', 'slice step cannot be zero'),
        ('RR1:2:3:4', 'a slice has at most start:stop:step'),
        ('RRa:2', "slice bound 'a' is not an integer"),
        ('RR1.5:', "slice bound '1.5' is not an integer"),
        ('RR,', 'empty item in the device list'),
        ('RR1,,2', 'empty item in the device list'),
        ('RR1,', 'empty item in the device list'),
        ('RR,1', 'empty item in the device list'),
        ('RR-1', 'device index -1 is negative'),
        ('RR0,-1', 'device index -1 is negative'),
        ('RR0,GPU-a', 'device indexes and UUIDs cannot be mixed'),
        ('RRGPU-a,1', 'device indexes and UUIDs cannot be mixed'),
        ('RRGPU-', "'GPU-' is neither a device index"),
        ('RRgpu-abc', "'gpu-abc' is neither a device index"),
        ('RR[]', 'brackets hold a slice such as [0:2]'),
        ('RR[x]', 'brackets hold a slice such as [0:2]'),
        ('RR[0:2', "slice bound '[0' is not an integer"),
        ('RR1:2,3', "slice bound '2,3' is not an integer"),
        ('RR 1 2', "'1 2' is neither a device index"),
    ],
)
def test_malformed_specs(spec, reason):
    with pytest.raises(ValueError) as info:
        parse_rr(spec)
    message = str(info.value)
    assert message.startswith(f'invalid CUDA_VISIBLE_DEVICES={spec!r}: ')
    assert reason in message
    assert 'accepted forms: RR (all devices), RR<start>:<stop>[:<step>]' in message
    assert 'RRGPU-<uuid>' in message


def test_non_string_spec():
    with pytest.raises(ValueError, match='expected a string'):
        parse_rr(3)  # type: ignore[arg-type]


# --- property: periodic, inside the pool --------------------------------------------------------


def _specs(device_count: int):
    bound = st.one_of(st.none(), st.integers(-device_count - 2, device_count + 2))
    step = st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0))

    def text(b):
        return '' if b is None else str(b)

    slices = st.tuples(bound, bound, step).map(
        lambda t: f'RR{text(t[0])}:{text(t[1])}' + (f':{text(t[2])}' if t[2] is not None else '')
    )
    indexes = st.lists(st.integers(0, max(device_count - 1, 0)), min_size=1, max_size=6).map(
        lambda xs: 'RR' + ','.join(map(str, xs))
    )
    uuids = st.lists(
        st.from_regex(r'(GPU|MIG)-[0-9a-f]{1,8}', fullmatch=True), min_size=1, max_size=5
    ).map(lambda xs: 'RR' + ','.join(xs))
    return st.one_of(st.just('RR'), slices, indexes, uuids)


@given(data=st.data(), device_count=st.integers(0, 9), replicas=st.integers(0, 40))
def test_assignment_is_periodic_and_inside_the_pool(data, device_count, replicas):
    spec = parse_rr(data.draw(_specs(device_count)))
    assert spec is not None
    try:
        pool = spec.pool(device_count)
    except ValueError as err:  # only an empty slice may fail here
        assert 'selects no device' in str(err)
        assert spec.window is not None
        return
    assigned = assign_devices(spec, replicas, device_count)
    assert len(assigned) == replicas
    if not pool:
        assert spec.needs_device_count and device_count == 0
        assert assigned == [None] * replicas
        return
    assert all(device in pool for device in assigned)
    for replica, device in enumerate(assigned):
        assert device == pool[replica % len(pool)]
        if replica + len(pool) < replicas:
            assert assigned[replica + len(pool)] == device
    if spec.window is not None:
        expected = [str(i) for i in range(device_count)[slice(*spec.window)]]
        assert list(pool) == expected
    if replicas >= len(pool):
        assert set(assigned) == set(pool)


# --- per-replica environments -------------------------------------------------------------------


def test_replica_environments_replace_the_variable():
    env = {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': 'RR1:'}
    envs = replica_environments(env, 3, device_count=3)
    assert envs == [
        {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': '1'},
        {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': '2'},
        {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': '1'},
    ]
    assert env == {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': 'RR1:'}
    envs[0]['X'] = '1'
    assert 'X' not in envs[1]


def test_replica_environments_without_devices_drop_the_variable():
    env = {'PATH': '/bin', 'CUDA_VISIBLE_DEVICES': 'RR'}
    assert replica_environments(env, 2, device_count=0) == [{'PATH': '/bin'}, {'PATH': '/bin'}]


@pytest.mark.parametrize('env', [{'PATH': '/bin'}, {'CUDA_VISIBLE_DEVICES': '0,1'}, {}])
def test_replica_environments_pass_other_values_through(env):
    envs = replica_environments(env, 2, device_count=4)
    assert envs == [env, env]
    assert envs[0] is not env and envs[0] is not envs[1]


def test_replica_environments_uuid_and_errors():
    env = {'CUDA_VISIBLE_DEVICES': 'RRGPU-a,GPU-b'}
    assert [e['CUDA_VISIBLE_DEVICES'] for e in replica_environments(env, 3, 0)] == [
        'GPU-a',
        'GPU-b',
        'GPU-a',
    ]
    with pytest.raises(ValueError, match="'RRx'"):
        replica_environments({'CUDA_VISIBLE_DEVICES': 'RRx'}, 2, 3)
    with pytest.raises(ValueError, match='device 3 does not exist'):
        replica_environments({'CUDA_VISIBLE_DEVICES': 'RR1,3'}, 2, 3)
    envs = replica_environments({'CUDA_VISIBLE_DEVICES': 'RR1,3'}, 2, 3, strict=False)
    assert [e['CUDA_VISIBLE_DEVICES'] for e in envs] == ['1', '3']


# --- device count -------------------------------------------------------------------------------

SMI_3 = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0aaaaaaa-74d2-7297-d557-12771b6a79d5)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0bbbbbbb-74d2-7297-d557-12771b6a79d5)
  MIG 1g.5gb      Device  0: (UUID: MIG-11111111-2222-3333-4444-555555555555)
  MIG 1g.5gb      Device  1: (UUID: MIG-66666666-2222-3333-4444-555555555555)
GPU 2: NVIDIA A100-SXM4-40GB (UUID: GPU-0ccccccc-74d2-7297-d557-12771b6a79d5)
"""


def test_count_from_nvidia_smi_ignores_mig_lines_and_the_environment():
    assert count_devices(lambda: SMI_3, {'CUDA_TOTAL_DEVICES': '8'}) == 3
    assert count_devices(lambda: SMI_3, {}) == 3


@pytest.mark.parametrize('output', [None, '', 'No devices were found\n'])
def test_count_falls_back_to_cuda_total_devices(output):
    assert count_devices(lambda: output, {'CUDA_TOTAL_DEVICES': '4'}) == 4
    assert count_devices(lambda: output, {'CUDA_TOTAL_DEVICES': ' 2 '}) == 2
    assert count_devices(lambda: output, {'CUDA_TOTAL_DEVICES': '0'}) == 0
    assert count_devices(lambda: output, {'CUDA_TOTAL_DEVICES': ''}) == 0
    assert count_devices(lambda: output, {}) == 0


@pytest.mark.parametrize('raw', ['two', '-1', '1.5'])
def test_bad_cuda_total_devices(raw):
    with pytest.raises(ValueError, match=rf"invalid CUDA_TOTAL_DEVICES={raw!r}: expected"):
        count_devices(lambda: None, {'CUDA_TOTAL_DEVICES': raw})


def test_count_calls_the_runner_once():
    calls = []

    def runner():
        calls.append(1)
        return SMI_3

    count_devices(runner, {})
    assert calls == [1]


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / 'fake-nvidia-smi'
    path.write_text(f'#!{sys.executable}\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_run_nvidia_smi_list_with_fake_commands(tmp_path):
    ok = _script(tmp_path, f'import sys; sys.stdout.write({SMI_3!r})')
    assert run_nvidia_smi_list((ok,)) == SMI_3
    failing = _script(tmp_path, 'import sys; sys.exit(9)')
    assert run_nvidia_smi_list((failing,)) is None
    assert run_nvidia_smi_list((str(tmp_path / 'missing'),)) is None
    not_executable = tmp_path / 'plain.txt'
    not_executable.write_text('x')
    assert run_nvidia_smi_list((str(not_executable),)) is None


def test_run_nvidia_smi_list_times_out(tmp_path):
    hanging = _script(tmp_path, 'import time; time.sleep(30)')
    assert run_nvidia_smi_list((hanging,), timeout=0.5) is None


def test_detect_device_count_runs_the_real_command():
    # On a machine without nvidia-smi this is the environment fallback; with GPUs, their count.
    environ = {'CUDA_TOTAL_DEVICES': '5'}
    found = detect_device_count(environ)
    assert isinstance(found, int) and found >= 0
    output = run_nvidia_smi_list()
    if output is None:
        assert found == 5
    else:
        assert found == sum(line.startswith('GPU ') for line in output.splitlines()) or found == 5
