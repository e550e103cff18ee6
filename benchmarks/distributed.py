"""Data-parallel training steps over MPI: time per step, samples/s, the Allreduce's share.

    python benchmarks/distributed.py [--ranks 1 2 4] [--networks mnist wide] [--backend numpy]

launches ``mpiexec -n P`` on itself for each P (more ranks than cores are oversubscribed) and
prints a markdown table. Each rank runs :meth:`backprop.distributed.Replica.run_epoch` over
``steps`` global batches (float32, SGD, the global batch of benchmarks/step_time.py: 128 for
the MNIST-size network, 256 for the wide one, split across the ranks: strong scaling), after
one warm-up epoch; the median of ``repeats`` epochs is reported. One BLAS thread per rank
(``--threads``): P = 1 uses one core, P = 2 both of a 2-core machine, P = 4 oversubscribes
(on a shared machine, OpenBLAS threads that outnumber the free cores spin against each other
and slow a step many times over). The Allreduce time is the time
spent in the gradient Allreduce (waiting for the slowest rank included); "alone" is the same
Allreduce timed in a loop with the ranks in step (the transfer itself); the bytes per step
the ring Allreduce's 2 (P - 1) / P x the parameter bytes each rank sends (and receives).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

NETWORKS = {"mnist": ([784, 256, 128, 10], 128, 40), "wide": ([1024, 1024, 1024, 1024, 10], 256, 6)}
REPEATS = 3


def worker(name: str, backend: str) -> None:
    import numpy as np

    from backprop import Network, optimizers
    from backprop.distributed import Communicator, Replica

    sizes, batch, steps = NETWORKS[name]
    comm = Communicator()
    net = Network(sizes, ["relu"] * (len(sizes) - 2) + ["softmax"], "cross_entropy",
                  backend=backend, seed=0)
    rng = np.random.default_rng(0)
    n = batch * steps
    X, Y = net._prepare(rng.normal(size=(n, sizes[0])).astype(np.float32),
                        rng.integers(0, sizes[-1], n))
    replica = Replica(comm, net, X, Y, shard=False)
    opt = optimizers.get("sgd")
    opt.reset(net.backend, net.parameters())
    replica.broadcast_state(opt)
    replica.prepare(batch)
    spent = [0.0]
    allreduce = comm.allreduce

    def timed(buf, what):
        start = time.perf_counter()
        allreduce(buf, what)
        if what == "the gradient Allreduce":
            spent[0] += time.perf_counter() - start
    comm.allreduce = timed
    epochs, reduces = [], []
    for repeat in range(REPEATS + 1):
        spent[0] = 0.0
        comm.comm.Barrier()
        start = time.perf_counter()
        replica.run_epoch(X, Y, None, batch, opt, 0.01, 0.0, 0.0, None, None)
        net.backend.synchronize()
        if repeat:                                   # the first epoch warms up
            epochs.append((time.perf_counter() - start) / steps)
            reduces.append(spent[0] / steps)
    flat, alone = net.flat_gradient(), []
    for _ in range(REPEATS):                         # the Allreduce alone, ranks in step
        comm.comm.Barrier()
        start = time.perf_counter()
        for _ in range(steps):
            allreduce(flat, "alone")
        alone.append((time.perf_counter() - start) / steps)
    if comm.rank == 0:
        step, reduce = statistics.median(epochs), statistics.median(reduces)
        param_bytes = net.n_parameters * np.dtype(net.dtype).itemsize
        print(json.dumps({"network": name, "ranks": comm.size, "batch": batch,
                          "step_ms": step * 1e3, "allreduce_ms": reduce * 1e3,
                          "alone_ms": statistics.median(alone) * 1e3,
                          "samples_per_s": batch / step, "param_bytes": param_bytes,
                          "ring_bytes": 2 * (comm.size - 1) / comm.size * param_bytes}),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--backend", default="numpy", choices=["numpy", "numba"])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.backend)
        return
    mpiexec = Path(sys.executable).with_name("mpiexec")
    mpiexec = str(mpiexec) if mpiexec.exists() else "mpiexec"
    root = Path(__file__).resolve().parents[1]
    print("| network | ranks | BLAS threads per rank | global batch | ms per step | samples/s | Allreduce ms per step "
          "(share) | the Allreduce alone, ms | parameter bytes | ring bytes sent per rank per step |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.networks:
        for ranks in args.ranks:
            threads = str(args.threads)
            env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": threads,
                   "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__,
                                   "--worker", name, "--backend", args.backend],
                                  env=env, capture_output=True, text=True, timeout=300)
            if done.returncode:
                sys.exit(done.stderr)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {name} {NETWORKS[name][0]} | {ranks} | {threads} | {r['batch']} | "
                  f"{r['step_ms']:.2f} | {r['samples_per_s']:,.0f} | {r['allreduce_ms']:.3f} "
                  f"({r['allreduce_ms'] / r['step_ms']:.0%}) | {r['alone_ms']:.3f} | "
                  f"{r['param_bytes']:,} | "
                  f"{r['ring_bytes']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
