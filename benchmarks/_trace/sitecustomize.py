"""Loaded first by every Python process that trace_write.py starts (through PYTHONPATH), so
by the replicas a Deployment starts: when NBORCH_BENCH_TRACE names a file, stamps the steps
of a stateful write (time.perf_counter(), one clock for every process on this machine) into
it, one line each: `<seconds> <pid> <step>`. nborch itself has no tracing hook and none is
added: the hook wraps its methods once they are imported."""
import builtins
import os
import sys
import time

if os.environ.get('NBORCH_BENCH_TRACE'):
    _fd = os.open(os.environ['NBORCH_BENCH_TRACE'], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    _pid = os.getpid()

    def _stamp(step: str) -> None:
        os.write(_fd, f'{time.perf_counter():.6f} {_pid} {step}\n'.encode())

    def _around(cls, name: str) -> None:  # a coroutine method: '<name>>' and '<name><'
        original = getattr(cls, name)

        async def traced(self, *args, **kwargs):
            _stamp(name + '>')
            try:
                return await original(self, *args, **kwargs)
            finally:
                _stamp(name + '<')
        setattr(cls, name, traced)

    def _before(cls, name: str) -> None:  # a plain method: '<name>'
        original = getattr(cls, name)

        def traced(self, *args, **kwargs):
            _stamp(name)
            return original(self, *args, **kwargs)
        setattr(cls, name, traced)

    def _install() -> bool:
        replica = sys.modules.get('nborch.runtime.consensus.replica')
        wal = sys.modules.get('nborch.runtime.consensus.wal_writer')
        worker = sys.modules.get('__main__')  # python -m nborch.runtime.worker
        if replica is None or wal is None or not hasattr(worker, 'WorkerServicer'):
            return False
        for name in ('write', '_handle_ready', '_apply'):
            _around(replica.ConsensusReplica, name)
        for name in ('receive', '_send'):
            _before(replica.ConsensusReplica, name)
        _around(wal.WalWriter, 'append')
        _around(worker.WorkerServicer, 'handle')
        return True

    _import = builtins.__import__

    def _watching_import(*args, **kwargs):
        module = _import(*args, **kwargs)
        if _install():
            builtins.__import__ = _import
        return module

    builtins.__import__ = _watching_import
