"""Inputs whose length varies: --accept-shape ranges served, refused outside, warmed lengths warm,
and outputs equal to Python's own forward of the same model."""
import json
import os

import numpy as np
import pytest

import inference_sidecar as sc
from conftest import MODELS

torch = pytest.importorskip("torch")

WARMED = [1, 7, 300, 512]


@pytest.fixture(scope="module")
def embedding(runtime_dir):
    from conftest import Sidecar

    warmups = [arg for length in WARMED for arg in ("--warmup-shape", f"1x{length}:int64")]
    sidecar = Sidecar(runtime_dir, "embedding", "--accept-shape", "1x1..512:int64", *warmups,
                      "--warmup-iterations", "2", "--cache-bytes", "0").wait_ready()
    yield sidecar
    assert sidecar.stop() == 0, sidecar.log()


def unwarmed_forwards(name):
    return json.loads(sc.metrics(name, format="json"))["unwarmed_forwards"]


def python_forward(ids):
    """The model as Python runs it, prepared as the sidecar prepares it (frozen, optimized)."""
    module = torch.jit.load(os.path.join(MODELS, "embedding.pt")).eval()
    module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
    with torch.inference_mode():
        return module(torch.from_numpy(ids)).numpy()


def test_every_length_in_the_range_is_served_as_python_computes_it(embedding):
    rng = np.random.default_rng(5)
    with sc.Client(embedding.name) as client:
        for length in WARMED:
            ids = rng.integers(0, 1000, size=(1, length), dtype=np.int64)
            (out,) = client.infer(ids)
            assert out.shape == (1, length, 16)
            np.testing.assert_array_equal(out, python_forward(ids))


def test_warmed_lengths_are_not_cold_and_others_are_counted(embedding):
    with sc.Client(embedding.name) as client:
        before = unwarmed_forwards(embedding.name)
        for length in WARMED:
            client.infer(np.zeros((1, length), dtype=np.int64))
        assert unwarmed_forwards(embedding.name) == before
        (out,) = client.infer(np.ones((1, 8), dtype=np.int64))  # within the range, never warmed up
        assert out.shape == (1, 8, 16)
        assert unwarmed_forwards(embedding.name) == before + 1


def test_a_length_outside_the_range_is_refused_naming_it(embedding):
    with sc.Client(embedding.name) as client:
        with pytest.raises(sc.Rejected) as refused:
            client.infer(np.zeros((1, 513), dtype=np.int64))
        assert "expected [1, 1..512] int64, got [1, 513] int64" in refused.value.message
        (out,) = client.infer(np.zeros((1, 512), dtype=np.int64))
        assert out.shape == (1, 512, 16)


def test_model_info_shows_the_range_and_the_warmed_shapes(embedding):
    with sc.Client(embedding.name) as client:
        (signature,) = client.model_info["signatures"]
        assert signature["inputs"] == [("int64", (1, (1, 512)))]
        assert signature["text"] == "[1, 1..512] int64"
        assert signature["outputs"] == [("float32", (1, 512, 16))]
        warmed = [shapes[0][1] for shapes in client.model_info["warmed"]]
        assert warmed == [(1, length) for length in WARMED]


def test_outputs_larger_than_the_bound_are_answered_with_the_bytes_needed(start_sidecar):
    sidecar = start_sidecar("grows_with_value", "--accept-shape", "1x1..64", "--warmup-shape", "1x4",
                            "--cache-bytes", "0")
    with sc.Client(sidecar.name) as client:
        x = np.full((1, 64), 0.5, dtype=np.float32)
        (out,) = client.infer(x)  # one copy: the bound warm-up saw at the range's largest size
        np.testing.assert_array_equal(out, x)
        x[0, 0] = 3.0  # four copies: larger than any request's reserved room
        with pytest.raises(sc.SidecarError) as refused:
            client.infer(x)
        assert refused.value.code == sc.ErrorCode.OUTPUT_TOO_LARGE
        assert f"the outputs need {4 * 64 * 4} bytes; the request reserved" in refused.value.message
        x[0, 0] = 0.25
        (out,) = client.infer(x)  # the client is left as it was
        np.testing.assert_array_equal(out, x)
