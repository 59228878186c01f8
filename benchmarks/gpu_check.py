"""GPU round robin on a real GPU machine: which device each replica is given, and what its
process sees through the CUDA driver (libcuda, no torch needed).

    python benchmarks/gpu_check.py            # CUDA_VISIBLE_DEVICES=RR, 3 replicas
    python benchmarks/gpu_check.py --uuids    # also the RRGPU-<uuid> form
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nborch import Client, Deployment, Executor, requests  # noqa: E402


class CudaProbe(Executor):
    """Reports CUDA_VISIBLE_DEVICES and the devices the CUDA driver shows this process."""

    @requests
    def probe(self, **kwargs) -> dict:
        try:
            cuda = ctypes.CDLL('libcuda.so.1')
            count = ctypes.c_int(0)
            status = cuda.cuInit(0)
            if status == 0:
                cuda.cuDeviceGetCount(ctypes.byref(count))
            driver = {'cuInit': status, 'devices': count.value}
        except OSError as exc:
            driver = {'error': str(exc)}
        return {'replica': self.runtime_args.replica_id,
                'CUDA_VISIBLE_DEVICES': os.environ.get('CUDA_VISIBLE_DEVICES'), **driver}


def probe(spec: str, replicas: int) -> None:
    with Deployment(name='gpu', uses=CudaProbe, replicas=replicas, quiet=True,
                    env={'CUDA_VISIBLE_DEVICES': spec}) as dep:
        rows = dep.status()['executors'][0]['shards'][0]['replicas']
        print(f'\nCUDA_VISIBLE_DEVICES={spec}, replicas={replicas}')
        print(f"{'replica':>8} {'assigned':>44} {'seen by process':>44} {'driver devices':>15}")
        for row in rows:
            answers = []
            client = Client(port=row['port'], secret=dep.secret)  # straight to this replica
            client.post('/', None, on_done=lambda r: answers.append(
                r.parameters['__results__']['gpu']))
            client.close()
            seen = answers[0]
            print(f"{row['replica']:>8} {str(row['gpu']['assigned']):>44} "
                  f"{str(seen['CUDA_VISIBLE_DEVICES']):>44} "
                  f"{str(seen.get('devices', seen.get('error'))):>15}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--replicas', type=int, default=3)
    parser.add_argument('--uuids', action='store_true')
    args = parser.parse_args()
    listing = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout
    print(listing.strip())
    probe('RR', args.replicas)
    if args.uuids:
        uuids = [line.split('UUID: ')[1].rstrip(')') for line in listing.splitlines()
                 if 'UUID: GPU-' in line]
        probe('RR' + ','.join(uuids), args.replicas)


if __name__ == '__main__':
    main()
