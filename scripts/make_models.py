#!/usr/bin/env python3
"""Makes TorchScript models the way users make them: an nn.Module, torch.jit.script, save.

    make_models.py OUT_DIR [NAME ...]     (default: every model but resnet18)

demo: the classic small CNN, Conv2d(3,64,3) -> mean over H,W -> Linear(64,10), 1x3x224x224 in.
tiny: Linear(64,10), 1x64 in.
mlp: Linear(1024,4096) -> ReLU -> Linear(4096,1024) -> ReLU -> Linear(1024,10), 1x1024 in. Its 33 MB of
     weights are read once per forward whatever the rows, so a batch costs little more than one row:
     the kind of model dynamic batching is for (with an optimized BLAS; see docs/benchmarks.md).
The others exercise the protocol in the tests: several inputs and outputs, a dict output, a model
that raises, two that add different constants (which model answered, across reloads), and one
whose forward never returns on some inputs (the watchdog); optional_mask has arguments with
defaults (left out of requests), takes_an_int a required int (refused at start). torch_save and
torch_save_legacy are `tiny` saved the usual wrong way, with torch.save (zip and legacy pickle formats), for the test of
the message that says so. identity returns its input, whatever its dtype and shape: the Python
package's tests send every dtype through it.
"""
import os
import sys

from typing import Optional

import torch
from torch import nn


class DemoCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024), nn.ReLU(), nn.Linear(1024, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TwoInTwoOut(nn.Module):
    """Two inputs of different dtypes, a tuple of two outputs."""

    def forward(self, x: torch.Tensor, index: torch.Tensor):
        return x * 2.0, index + 1


class ListOut(nn.Module):
    def forward(self, x: torch.Tensor):
        return [x + 1.0, x.sum(dim=1)]


class DictOut(nn.Module):
    def forward(self, x: torch.Tensor):
        return {"doubled": x * 2.0}


class RaisesOnNegative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.min() < 0):
            raise RuntimeError("negative input is not allowed")
        return x.sqrt()


class PlusConstant(nn.Module):
    """x + a constant: two of them tell apart which model answered (the reload test)."""

    def __init__(self, constant: float):
        super().__init__()
        self.constant = constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.constant


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class SpinsOnLargeInput(nn.Module):
    """Never returns for an input whose first value exceeds 1.5, which warm-up (values in [0, 1))
    never sends: a forward stuck for good, for the watchdog test."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        while bool(y[0, 0] > 1.5):
            y = y * 1.0
        return y


class OptionalMask(nn.Module):
    """forward(x, mask=None, scale=2.0): arguments with defaults, which requests leave out."""

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, scale: float = 2.0) -> torch.Tensor:
        if mask is None:
            return x * scale
        return x * mask


class TakesAnInt(nn.Module):
    """A required argument that is no tensor: requests cannot carry it."""

    def forward(self, x: torch.Tensor, repeats: int) -> torch.Tensor:
        return x.repeat(repeats, 1)


class Embedding(nn.Module):
    """Token ids of any length -> a 16-float vector per token (nn.Embedding, then a Linear): a model
    whose input length varies, served with --accept-shape ranges."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.embed = nn.Embedding(1000, 32)
        self.project = nn.Linear(32, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.embed(ids))


class GrowsWithValue(nn.Module):
    """Outputs 1 + int(x[0, 0]) copies of its input side by side: their size follows a value, not
    the input's shape, so warm-up (values in [0, 1)) cannot see how large they can get."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, 1 + int(x[0, 0].item()))


def resnet18() -> nn.Module:
    """torchvision's resnet18 with random weights (weights=None): a real model's size and cost.
    Needs python3-torchvision, imported only when asked for, so the tests do not need it."""
    import torchvision

    return torchvision.models.resnet18(weights=None)


MODELS = {
    "demo": DemoCNN,
    "tiny": Tiny,
    "mlp": MLP,
    "two_in_two_out": TwoInTwoOut,
    "list_out": ListOut,
    "dict_out": DictOut,
    "raises": RaisesOnNegative,
    "plus_1000": lambda: PlusConstant(1000.0),
    "plus_2000": lambda: PlusConstant(2000.0),
    "spins": SpinsOnLargeInput,
    "optional_mask": OptionalMask,
    "takes_an_int": TakesAnInt,
    "identity": Identity,
    "embedding": Embedding,
    "grows_with_value": GrowsWithValue,
    "resnet18": resnet18,
}
# Made only when named: they need more than the tests' packages, or take long to script.
ON_REQUEST = {"resnet18"}

# Not TorchScript: what a user gets from torch.save(model) instead of torch.jit.save.
SAVED_WITH_TORCH_SAVE = {
    "torch_save": dict(),
    "torch_save_legacy": dict(_use_new_zipfile_serialization=False),
}


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    names = sys.argv[2:] or [name for name in MODELS if name not in ON_REQUEST] + list(SAVED_WITH_TORCH_SAVE)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    for name in names:
        path = os.path.join(out_dir, f"{name}.pt")
        if name in SAVED_WITH_TORCH_SAVE:
            torch.save(Tiny().eval(), path, **SAVED_WITH_TORCH_SAVE[name])
            print(path)
            continue
        if name not in MODELS:
            known = ", ".join(list(MODELS) + list(SAVED_WITH_TORCH_SAVE))
            print(f"unknown model {name!r}; known: {known}", file=sys.stderr)
            return 2
        module = torch.jit.script(MODELS[name]().eval())
        module.save(path)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
