"""submit() and its Request, the zero-copy path, and threads with a Client each."""
import threading
import time

import numpy as np
import pytest

import inference_sidecar as sc


@pytest.fixture(scope="module")
def identity(sidecars):
    with sc.Client(sidecars["identity"]) as client:
        yield client


@pytest.fixture(scope="module")
def tiny(sidecars):
    """Several requests in flight need declared shapes: the output space of each is known."""
    with sc.Client(sidecars["tiny"]) as client:
        yield client


def test_submitted_requests_collected_in_any_order(tiny):
    inputs = [np.full((1, 64), i / 8, np.float32) for i in range(8)]
    expected = [tiny.infer(x, cache=False)[0] for x in inputs]
    requests = [tiny.submit(x, cache=False) for x in inputs]
    for want, request in reversed(list(zip(expected, requests))):
        (out,) = request.result(timeout=5)
        np.testing.assert_array_equal(out, want)
        assert request.done()
        assert request.result()[0] is out  # asked again: the same outputs


def test_done_polls_without_blocking(identity):
    request = identity.submit(np.arange(5, dtype=np.float64), cache=False)
    for _ in range(100_000):
        if request.done():
            break
    (out,) = request.result()
    np.testing.assert_array_equal(out, np.arange(5))


def test_a_failed_request_raises_from_result(sidecars):
    with sc.Client(sidecars["raises"]) as client:
        request = client.submit(np.array([[-1.0]], np.float32))
        with pytest.raises(sc.ModelError):
            request.result(timeout=5)
        with pytest.raises(sc.ModelError):
            request.result()


def test_results_as_torch(identity):
    torch = pytest.importorskip("torch")
    request = identity.submit(np.ones((1, 4), np.float32), cache=False)
    (out,) = request.result(as_torch=True)
    assert isinstance(out, torch.Tensor) and torch.equal(out, torch.ones(1, 4))


def test_a_request_dropped_uncollected_gives_its_slot_back(tiny):
    # A client has 16 slots; a request dropped unanswered keeps its slot only until it is answered.
    for _ in range(3 * 16):
        for attempt in range(500):
            try:
                tiny.submit(np.ones((1, 64), np.float32), cache=False)  # dropped at once
                break
            except sc.Overloaded:
                time.sleep(0.01)
        else:
            pytest.fail("the slots of dropped requests were never given back")
    tiny.infer(np.ones((1, 64), np.float32), cache=False)


def test_zero_copy_outputs_are_read_only_views(sidecars):
    with sc.Client(sidecars["tiny"]) as client:
        x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
        (expected,) = client.infer(x, cache=False)
        buffer = client.input_buffer(np.float32, (1, 64))
        assert buffer.flags.writeable and buffer.shape == (1, 64) and buffer.dtype == np.float32
        buffer[:] = x
        (out,) = client.run(cache=False)
        assert not out.flags.writeable and not out.flags.owndata
        with pytest.raises(ValueError):
            out[0, 0] = 1
        np.testing.assert_array_equal(out, expected)
        client.input_buffer("float32", [1, 64])
        client.reset_inputs()
        with pytest.raises(sc.Rejected, match="input_buffer"):
            client.run()


def test_zero_copy_two_inputs(sidecars):
    with sc.Client(sidecars["two_in_two_out"]) as client:
        client.input_buffer("float32", (1, 3))[:] = [1, 2, 3]
        client.input_buffer(np.int64, (2,))[:] = [7, 8]
        doubled, incremented = client.run(timeout=5, cache=False)
        np.testing.assert_array_equal(doubled, [[2, 4, 6]])
        np.testing.assert_array_equal(incremented, [8, 9])


def test_four_threads_with_a_client_each(sidecars):
    errors = []

    def work(seed):
        try:
            with sc.Client(sidecars["identity"]) as client:
                for i in range(200):
                    x = np.full((4, 4), seed * 1000 + i, np.int64)
                    (out,) = client.infer(x, cache=False)
                    np.testing.assert_array_equal(out, x)
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_one_client_in_two_threads_at_once_is_refused(sidecars):
    with sc.Client(sidecars["identity"]) as client:
        inside = threading.Event()

        class Slow:
            """Converted while the first thread is inside infer(): numpy asks for __array__."""

            def __array__(self, dtype=None):
                inside.set()
                done.wait(5)
                return np.ones(1, np.float32)

        done = threading.Event()
        first = threading.Thread(target=lambda: client.infer(Slow(), cache=False))
        first.start()
        assert inside.wait(5)
        try:
            with pytest.raises(RuntimeError, match="not thread-safe"):
                client.infer(np.ones(1, np.float32))
        finally:
            done.set()
            first.join()
        client.infer(np.ones(1, np.float32), cache=False)
