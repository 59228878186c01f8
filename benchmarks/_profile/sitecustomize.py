"""Loaded first by every Python process that profile_echo.py starts (through PYTHONPATH),
and so by the gateway and the workers the Deployment starts in turn: installs the
per-thread profiler of benchmarks/_profile_hook.py when NBORCH_BENCH_PROFILE names a folder.
nborch itself has no profiling hook; this needs no change to it."""
import os

if os.environ.get('NBORCH_BENCH_PROFILE'):
    import _profile_hook
    _profile_hook.install(os.environ['NBORCH_BENCH_PROFILE'])
