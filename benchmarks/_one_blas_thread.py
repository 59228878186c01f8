"""Imported first (before numpy) by the sweep and the profiles: BLAS and OpenMP run one
thread in this process and, through the environment, in every worker it starts, unless
the variables are set already.

Replicas, not a BLAS pool, are the parallelism here, and the in-process and floor figures
must use the same threads as each worker. nborch's own default gives one replica all the
cores (`_threads_per_worker`); on a 2-core machine busy with other work, a 2-thread
OpenBLAS mat-vec over 10 000 x 128 floats was measured at 22 ms against ~0.2 ms on one
thread (profile_echo.py --search 10000, one run)."""
import os

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')
