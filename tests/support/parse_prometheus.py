#!/usr/bin/env python3
"""Reads Prometheus text exposition from stdin with prometheus_client's own parser (an independent
reader of the format) and prints one sample per line: name{label=value,...}, a tab, the value
(labels sorted by name).
Exits non-zero when the text does not parse."""
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            print(f"{sample.name}{{{labels}}}\t{sample.value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
