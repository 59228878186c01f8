import nborch


def test_all_is_exact():
    assert sorted(nborch.__all__) == [
        'AsyncClient', 'ChildStartError', 'Client', 'ConfigError', 'Deployment', 'Executor',
        'ExecutorError', 'ExportError', 'Flow', 'IncompletePostError', 'MembershipError',
        'MessageTooLargeError', 'PortInUseError', 'Response', 'RolloutError',
        'UnavailableError', 'dynamic_batching', 'requests', 'write',
    ]
    for name in nborch.__all__:
        assert getattr(nborch, name) is not None


def test_runtime_is_only_importable_under_nborch(tmp_path):
    import subprocess
    import sys
    probe = ('import importlib.util as u; '
             'print([u.find_spec(n) is not None for n in '
             '("nborch.runtime", "nborch.widgets", "nborch.protos", "runtime", "widgets")])')
    out = subprocess.run([sys.executable, '-c', probe], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == '[True, True, True, False, False]'
