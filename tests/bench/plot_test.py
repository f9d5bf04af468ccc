#!/usr/bin/python3
"""bench/plot.py on a small fixture of sidecar-bench rows (latency rows of two models, --clients rows
of a third): it must write one CDF per latency model and one clients figure, each a PNG file. What
the figures show is not checked."""

import os
import subprocess
import sys
import tempfile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = ["latency-cdf-tiny.png", "latency-cdf-demo.png", "clients-mlp.png"]


def main(plot_script, fixture):
    with tempfile.TemporaryDirectory(prefix="plot-test-") as out_dir:
        subprocess.run([sys.executable, plot_script, "--out", out_dir, fixture], check=True)
        failures = []
        for name in EXPECTED:
            path = os.path.join(out_dir, name)
            if not os.path.isfile(path):
                failures.append(f"{name}: not written")
                continue
            with open(path, "rb") as file:
                if file.read(len(PNG_MAGIC)) != PNG_MAGIC:
                    failures.append(f"{name}: not a PNG")
        unexpected = sorted(set(os.listdir(out_dir)) - set(EXPECTED))
        if unexpected:
            failures.append(f"unexpected files: {unexpected}")
        for failure in failures:
            print(failure, file=sys.stderr)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
