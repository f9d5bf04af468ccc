"""Arrays in and out: every dtype, strided and byte-swapped arrays, several inputs and outputs,
torch tensors, and what a Client reports about the model."""
import subprocess
import sys

import numpy as np
import pytest

import inference_sidecar as sc

DTYPES = ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "bool"]


def sample(dtype, shape=(3, 8)):
    values = np.arange(np.prod(shape)).reshape(shape) - 5
    return (values % 2 == 0) if dtype == "bool" else values.astype(dtype)


@pytest.fixture(scope="module")
def identity(sidecars):
    with sc.Client(sidecars["identity"]) as client:
        yield client


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_comes_back_as_sent(identity, dtype):
    x = sample(dtype)
    outputs = identity.infer(x, cache=False)
    assert isinstance(outputs, list) and len(outputs) == 1
    assert outputs[0].dtype == np.dtype(dtype)
    assert outputs[0].shape == x.shape
    np.testing.assert_array_equal(outputs[0], x)


def test_a_strided_view_is_sent_as_its_elements(identity):
    x = np.arange(48, dtype=np.float32).reshape(4, 12)
    view = x[:, ::2]  # not contiguous: sent as it stands, the sidecar would read x's first 24 values
    (out,) = identity.infer(view, cache=False)
    np.testing.assert_array_equal(out, view)


def test_fortran_order_and_foreign_byte_order_are_sent_as_their_values(identity):
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    (out,) = identity.infer(np.asfortranarray(x), cache=False)
    np.testing.assert_array_equal(out, x)
    swapped = x.astype(">f8" if sys.byteorder == "little" else "<f8")
    (out,) = identity.infer(swapped, cache=False)
    assert out.dtype == np.float64 and out.dtype.isnative
    np.testing.assert_array_equal(out, x)


def test_anything_numpy_asarray_takes(identity):
    (out,) = identity.infer([[1.5, 2.5]], cache=False)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1.5, 2.5]])


def test_outputs_are_writeable_arrays_of_their_own(identity):
    x = np.ones((2, 2), np.float32)
    (first,) = identity.infer(x, cache=False)
    (second,) = identity.infer(x * 2, cache=False)
    first += 1  # owned by the caller: no other output shares its memory
    np.testing.assert_array_equal(first, np.full((2, 2), 2))
    np.testing.assert_array_equal(second, np.full((2, 2), 2))


def test_a_dtype_the_protocol_lacks_is_a_type_error(identity):
    with pytest.raises(TypeError, match="uint16"):
        identity.infer(np.zeros(3, np.uint16))
    with pytest.raises(TypeError, match="no inputs"):
        identity.infer()


def test_two_inputs_two_outputs(sidecars):
    with sc.Client(sidecars["two_in_two_out"]) as client:
        x = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
        index = np.array([[3, 4]], dtype=np.int64)
        doubled, incremented = client.infer(x, index, cache=False)
        np.testing.assert_allclose(doubled, x * 2)
        np.testing.assert_array_equal(incremented, index + 1)


def test_model_info_of_a_warmed_model(sidecars):
    with sc.Client(sidecars["tiny"]) as client:
        info = client.model_info
        assert info["path"].endswith("tiny.pt")
        assert info["signatures"] == [{"inputs": [("float32", (1, 64))], "outputs": [("float32", (1, 10))],
                                       "text": "[1, 64] float32"}]
        assert info["warmed"] == [[("float32", (1, 64))]]
        assert info["max_batch"] == 1
        assert info["input_count"] == 1 and info["output_count"] == 1
        assert client.name == sidecars["tiny"] and client.connections == 1
        client.ping()


def test_torch_tensors_in_and_out(identity):
    torch = pytest.importorskip("torch")
    x = torch.arange(12, dtype=torch.float32, requires_grad=True).reshape(3, 4)
    (out,) = identity.infer(x, cache=False)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, x.detach().numpy())
    transposed = torch.arange(12, dtype=torch.int64).reshape(3, 4).t()  # not contiguous
    (out,) = identity.infer(transposed, as_torch=True, cache=False)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
    assert torch.equal(out, transposed)
    brain = torch.tensor([[1.5, -2.0, 3.25]], dtype=torch.bfloat16)
    (out,) = identity.infer(brain, as_torch=True, cache=False)
    assert out.dtype == torch.bfloat16 and torch.equal(out, brain)


def test_numpy_callers_never_import_torch(sidecars):
    script = (
        "import sys, numpy as np, inference_sidecar as sc\n"
        f"c = sc.Client({sidecars['identity']!r})\n"
        "assert c.infer(np.ones(3, np.float32))[0].sum() == 3\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_a_closed_client_refuses_calls(sidecars):
    client = sc.Client(sidecars["identity"])
    client.close()
    assert client.closed
    with pytest.raises(ValueError, match="closed"):
        client.infer(np.ones(1, np.float32))
    client.close()  # twice is fine
