#!/usr/bin/env python3
"""The seed of this project, measured: a service of N worker processes (multiprocessing), each
serving requests with a TorchScript model, either loading the model itself (each process its own
copy) or sharing one sidecar through the Python package inference_sidecar.

    PYTHONPATH=build/dev/python /usr/bin/python3 examples/python/workers.py \\
        --model build/dev/models/demo.pt --shape 1x3x224x224 \\
        --sidecar build/dev/sidecar/inference-sidecar [--workers 4] [--requests 200]

For each way it prints the latency of a request as a worker sees it (p50, p99), the memory of all
the processes serving together (the sum of their PSS, so shared pages count once: the workers, and
for the sidecar way the sidecar too, its result cache included), and then, through the sidecar,
every worker cycling through the same 10 inputs: what the result cache does to repeated inputs.
Each worker sends --requests requests one after the other, all workers at once. resnet18 comes
from `scripts/make_models.py DIR resnet18` (needs python3-torchvision).
"""
import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time


def pss_kib(pid):
    """Proportional set size of one process: its private pages plus its share of shared ones."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def worker(way, model, shape, requests, name, repeat, ready, go, results):
    """One worker process: prepares (loads the model, or connects), reports ready, waits for the
    start, serves `requests` requests, reports its latencies, then stays alive until measured."""
    import numpy as np

    # Made one at a time, outside the timing, so that the inputs do not weigh in the memory measured.
    generator = np.random.default_rng(os.getpid())
    popular = [np.random.default_rng(7 + i).random(shape, dtype=np.float32) for i in range(10)]

    def next_input(i):
        # Repeated: the same 10 inputs in every worker, over and over (a popular query).
        return popular[i % len(popular)] if repeat else generator.random(shape, dtype=np.float32)

    if way == "in-process":
        import torch

        torch.set_num_threads(1)
        module = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(model).eval()))
        with torch.inference_mode():
            for _ in range(3):  # warm-up, as the sidecar does before it reports ready
                module(torch.from_numpy(popular[0]))

        def call(x):
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()

    else:
        import inference_sidecar as sc

        client = sc.Client(name, timeout=60.0)

        def call(x):
            return client.infer(x, timeout=60.0)[0]

    ready.put(os.getpid())
    go.wait()
    latencies = []
    for i in range(requests):
        x = next_input(i)
        started = time.perf_counter()
        out = call(x)
        latencies.append(time.perf_counter() - started)
        assert np.isfinite(out).all()
    results.put(latencies)
    go.wait()  # held until the parent has read every process's memory


def run_way(way, args, name=None, repeat=False, sidecar_pid=None):
    context = mp.get_context("spawn")  # a fresh interpreter per worker, as a service's workers are
    ready, results = context.Queue(), context.Queue()
    go = context.Barrier(args.workers + 1)
    shape = tuple(int(d) for d in args.shape.split("x"))
    processes = [
        context.Process(target=worker, args=(way, args.model, shape, args.requests, name, repeat, ready, go, results))
        for _ in range(args.workers)
    ]
    for process in processes:
        process.start()
    pids = [ready.get(timeout=300) for _ in processes]
    go.wait()  # all at once
    latencies = []
    for _ in processes:
        latencies.extend(results.get(timeout=3600))
    memory = sum(pss_kib(pid) for pid in pids)
    if sidecar_pid is not None:
        memory += pss_kib(sidecar_pid)
    go.wait()
    for process in processes:
        process.join()
    latencies.sort()
    p50 = statistics.median(latencies) * 1e3
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3
    return p50, p99, memory / 1024


def start_sidecar(args, runtime_dir):
    name = "workers-example"
    log = open(os.path.join(runtime_dir, "sidecar.log"), "w")
    process = subprocess.Popen(
        [args.sidecar, "--name", name, "--model", args.model, "--warmup-shape", args.shape, "--runtime-dir",
         runtime_dir, "--cache-bytes", args.cache_bytes],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(runtime_dir, name + ".sock")) or not ready(runtime_dir, name):
        if process.poll() is not None or time.time() > deadline:
            raise SystemExit(f"the sidecar did not start; see {log.name}")
        time.sleep(0.1)
    return process, name


def ready(runtime_dir, name):
    import inference_sidecar as sc

    try:
        return sc.status(name)["ready"]
    except sc.SidecarError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", required=True, help="input shape, e.g. 1x3x224x224 (float32)")
    parser.add_argument("--sidecar", required=True, help="the inference-sidecar binary")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="per worker")
    parser.add_argument("--cache-bytes", default="64M", help="the sidecar's result cache (committed at start, so in its PSS)")
    args = parser.parse_args()

    rows = []
    rows.append(("each worker loads the model",) + run_way("in-process", args))
    with tempfile.TemporaryDirectory(prefix="workers-example-") as runtime_dir:
        os.environ["INFERENCE_SIDECAR_RUNTIME_DIR"] = runtime_dir
        sidecar, name = start_sidecar(args, runtime_dir)
        try:
            rows.append(("one sidecar, distinct inputs",) + run_way("sidecar", args, name, False, sidecar.pid))
            # Every worker cycles through the same 10 inputs: after the first round, the cache answers.
            rows.append(("one sidecar, repeated inputs",) + run_way("sidecar", args, name, True, sidecar.pid))
        finally:
            sidecar.terminate()
            sidecar.wait()
    print(f"{args.workers} workers x {args.requests} requests, model {os.path.basename(args.model)} {args.shape}")
    print(f"{'way':<32} {'p50 ms':>10} {'p99 ms':>10} {'PSS MiB':>10}")
    for way, p50, p99, memory in rows:
        print(f"{way:<32} {p50:>10.3f} {p99:>10.3f} {memory:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
