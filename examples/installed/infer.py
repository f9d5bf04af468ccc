#!/usr/bin/env python3
"""infer.c in Python: runs the tiny model (1x64 float32 in) of sidecar NAME through the installed
package inference_sidecar and prints the output as infer.c does, so that the two can be compared.

    python3 infer.py NAME
"""
import sys

import numpy as np

import inference_sidecar as sc


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} SIDECAR_NAME", file=sys.stderr)
        return 2
    # The same input as infer.c.
    x = ((np.arange(64) % 7) * 0.25 - 0.5).astype(np.float32).reshape(1, 64)
    try:
        with sc.Client(sys.argv[1]) as client:
            (out,) = client.infer(x, timeout=1.0)
    except sc.SidecarError as error:
        print(f"infer: {error}", file=sys.stderr)
        return 1
    shape = ", ".join(str(dim) for dim in out.shape)
    print(f"[{shape}] {out.dtype}:" + "".join(" %.6g" % value for value in out.ravel()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
