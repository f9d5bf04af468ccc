"""Every failure raises a SidecarError subclass carrying the library's code and message."""
import time

import numpy as np
import pytest

import inference_sidecar as sc
from conftest import other_thread_ran_during


def test_every_error_code_has_a_class():
    assert sc.ErrorCode.OK == 0 and sc.ErrorCode.NOT_RUNNING == 1
    expected = {
        "NOT_RUNNING": sc.NotRunning, "NOT_READY": sc.NotReady, "REJECTED": sc.Rejected,
        "INVALID_ARGUMENT": sc.Rejected, "MODEL_ERROR": sc.ModelError, "TIMEOUT": sc.Timeout,
        "DEADLINE_EXCEEDED": sc.Timeout, "SIDECAR_GONE": sc.SidecarGone, "PERMISSION_DENIED": sc.PermissionDenied,
        "UNTRUSTED": sc.PermissionDenied, "OVERLOADED": sc.Overloaded, "TOO_MANY_CLIENTS": sc.Overloaded,
    }
    for name, cls in expected.items():
        assert sc._CLASS_OF[name] is cls
    assert all(issubclass(cls, sc.SidecarError) for cls in sc._CLASS_OF.values())


def test_wrong_shape_is_rejected_with_the_expected_shapes(sidecars):
    with sc.Client(sidecars["tiny"]) as client:
        with pytest.raises(sc.Rejected) as raised:
            client.infer(np.zeros((1, 63), np.float32))
        assert raised.value.code == sc.ErrorCode.REJECTED
        assert "[1, 64]" in raised.value.message
        assert str(raised.value).startswith("rejected: ")
        client.infer(np.zeros((1, 64), np.float32))  # the client carries on


def test_a_model_that_raises(sidecars):
    with sc.Client(sidecars["raises"]) as client:
        with pytest.raises(sc.ModelError, match="negative input is not allowed") as raised:
            client.infer(np.array([[1.0, -1.0]], np.float32))
        assert raised.value.code == sc.ErrorCode.MODEL_ERROR
        (root,) = client.infer(np.array([[4.0, 9.0]], np.float32))
        np.testing.assert_allclose(root, [[2.0, 3.0]])


def test_not_running(runtime_dir):
    with pytest.raises(sc.NotRunning) as raised:
        sc.Client("nobody-serves-this", timeout=0.1)
    assert raised.value.code == sc.ErrorCode.NOT_RUNNING
    with pytest.raises(sc.NotRunning):
        sc.status("nobody-serves-this", timeout=0.1)


def test_a_deadline_that_has_passed_times_out(sidecars):
    with sc.Client(sidecars["identity"]) as client:
        with pytest.raises(sc.Timeout):
            client.infer(np.ones(4, np.float32), timeout=0, cache=False)
        # The abandoned request may still hold its slot for a moment.
        for _ in range(100):
            try:
                (out,) = client.infer(np.ones(4, np.float32), cache=False)
                break
            except sc.Overloaded:
                time.sleep(0.01)
        np.testing.assert_array_equal(out, np.ones(4))


def test_the_gil_is_released_while_connect_waits(runtime_dir):
    def connect():
        with pytest.raises(sc.NotRunning):
            sc.Client("nobody-serves-this-either", timeout=0.3)  # polls for the socket

    assert other_thread_ran_during(connect), "no other thread ran while connect waited"


def test_bad_arguments(runtime_dir):
    with pytest.raises(ValueError):
        sc.Client("x", timeout=-1)
    with pytest.raises(ValueError):
        sc.Client("x", cache="maybe")
    with pytest.raises(ValueError, match="format"):
        sc.metrics("x", "xml")
