#!/usr/bin/env python3
"""Latency of the Python package against the same sidecar settings as sidecar-bench's rows.

    PYTHONPATH=build/dev/python /usr/bin/python3 bench/python_bench.py \\
        --sidecar build/dev/sidecar/inference-sidecar --model build/dev/models/tiny.pt --shape 1x64

Rows (compare with `sidecar-bench --model ... --shape ...`, run back to back):
  py_run         input_buffer() + fill + run(), cache bypassed: what sidecar_spin does in C++
  py_infer       infer(), cache bypassed: the copying path
  py_hit_client  infer() of the same input every call, found by the client in the cache: what
                 cache_hit_client does in C++
Like sidecar-bench, the sidecar and the client both poll (--spin-us 1000000), one worker, and the
client runs on the last CPU, the sidecar on the others (--no-pin: wherever the scheduler likes).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import inference_sidecar as sc


def percentiles(samples_ns):
    samples = sorted(samples_ns)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1000.0  # noqa: E731
    return pick(0.5), pick(0.99), statistics.fmean(samples) / 1000.0


def timed(call, requests, skip):
    samples = []
    clock = time.perf_counter_ns
    for r in range(requests + skip):
        start = clock()
        call()
        end = clock()
        if r >= skip:
            samples.append(end - start)
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sidecar", required=True, help="the inference-sidecar binary")
    parser.add_argument("--model", required=True, help="a TorchScript file taking one float32 input")
    parser.add_argument("--shape", default="1x64")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(allowed) >= 2
    client_cpus, sidecar_cpus = ({allowed[-1]}, set(allowed[:-1])) if pin else (set(allowed), set(allowed))
    shape = tuple(int(dim) for dim in args.shape.split("x"))
    skip = max(100, args.requests // 10)

    runtime_dir = tempfile.mkdtemp(prefix="python-bench-")
    os.environ["INFERENCE_SIDECAR_RUNTIME_DIR"] = runtime_dir
    name = f"python-bench-{os.getpid()}"
    log = open(os.path.join(runtime_dir, "sidecar.log"), "wb")
    sidecar = subprocess.Popen(
        [args.sidecar, "--model", args.model, "--name", name, "--warmup-shape", args.shape, "--workers", "1",
         "--spin-us", "1000000", "--max-clients", "2", "--warmup-iterations", "20", "--cache-bytes", "256M"],
        stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.sched_setaffinity(0, sidecar_cpus))
    os.sched_setaffinity(0, client_cpus)
    print("client pinned to the last CPU, the sidecar to the others" if pin else "not pinned")
    try:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        with sc.Client(name, timeout=300, spin_us=1_000_000) as client:

            def run():
                client.input_buffer(np.float32, shape)[...] = x
                return client.run(cache=False)

            rows = {
                "py_run": timed(run, args.requests, skip),
                "py_infer": timed(lambda: client.infer(x, cache=False), args.requests, skip),
            }
            client.infer(x)  # stores the result
            rows["py_hit_client"] = timed(lambda: client.infer(x), args.requests, skip)
            assert client.last_cache_outcome == "hit in client", client.last_cache_outcome
        print(f"{'row':<16} {'p50_us':>10} {'p99_us':>10} {'mean_us':>10} {'requests':>10}")
        for row, samples in rows.items():
            p50, p99, mean = percentiles(samples)
            print(f"{row:<16} {p50:>10.2f} {p99:>10.2f} {mean:>10.2f} {len(samples):>10}")
    finally:
        sidecar.terminate()
        sidecar.wait()
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
