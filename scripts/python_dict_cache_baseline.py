#!/usr/bin/env python3
"""The seed-style Python result cache the sidecar's cache replaces, measured on this machine.

    /usr/bin/python3 scripts/python_dict_cache_baseline.py

A dict keyed by hash(str(tensor)): prints the p50 of one lookup (a hit) on a 1x3x224x224 float
tensor, and shows that two inputs differing in one element get the same key, because str() of a
large tensor elides its middle.
"""
import statistics
import time

import torch


def key(tensor):
    return hash(str(tensor))


def main():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 224, 224)
    cache = {key(a): torch.rand(1, 10)}
    timings = []
    for _ in range(300):
        start = time.perf_counter()
        hit = cache.get(key(a))
        timings.append((time.perf_counter() - start) * 1e6)
        assert hit is not None
    timings.sort()
    print(f"dict[hash(str(tensor))] lookup, 1x3x224x224 float32: p50 {statistics.median(timings):.1f} us, "
          f"p99 {timings[int(len(timings) * 0.99)]:.1f} us")
    b = a.clone()
    b[0, 1, 112, 112] += 1.0
    print(f"one element changed in the middle: same key = {key(a) == key(b)}, same tensor = {torch.equal(a, b)}")


if __name__ == "__main__":
    main()
