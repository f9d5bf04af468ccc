#!/usr/bin/env python3
"""How much freezing and optimize_for_inference change a model's outputs, as the sidecar prepares it,
against the module as scripted, in Python's own LibTorch.

    numerics.py MODELS_DIR [NAME:SHAPE ...]     (default: demo:1x3x224x224 tiny:1x64)

Prints the largest absolute difference of each preparation's output from the scripted module's,
on one uniform [0, 1) input.
"""
import sys

import torch


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    models_dir = sys.argv[1]
    specs = sys.argv[2:] or ["demo:1x3x224x224", "tiny:1x64"]
    torch.manual_seed(0)
    for spec in specs:
        name, shape_text = spec.split(":")
        shape = tuple(int(d) for d in shape_text.split("x"))
        path = f"{models_dir}/{name}.pt"
        scripted = torch.jit.load(path).eval()
        frozen = torch.jit.freeze(torch.jit.load(path).eval())
        optimized = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(path).eval()))
        x = torch.rand(shape)
        with torch.inference_mode():
            reference = scripted(x)
            frozen_diff = (frozen(x) - reference).abs().max().item()
            optimized_diff = (optimized(x) - reference).abs().max().item()
        print(f"{name} {shape_text}: frozen {frozen_diff:.3g}, frozen + optimize_for_inference {optimized_diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
