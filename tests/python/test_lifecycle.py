"""The result cache, the module's functions, and a sidecar that restarts."""
import json
import os
import signal

import numpy as np
import pytest

import inference_sidecar as sc
from conftest import other_thread_ran_during


def test_cache_looked_up_in_the_client_and_in_the_sidecar(sidecars):
    x = np.random.default_rng().random((1, 64), dtype=np.float32)  # not in the cache from earlier tests
    with sc.Client(sidecars["tiny"], cache=True) as client:
        (first,) = client.infer(x)
        assert client.last_cache_outcome == "miss"
        (again,) = client.infer(x)
        assert client.last_cache_outcome == "hit in client"
        np.testing.assert_array_equal(again, first)
        client.infer(x, cache=False)
        assert client.last_cache_outcome == "not used"
        stats = client.cache_stats()
        assert stats["enabled"] and stats["entries"] >= 1 and stats["inserts"] >= 1
    with sc.Client(sidecars["tiny"], cache="sidecar") as client:
        client.infer(x)
        assert client.last_cache_outcome == "hit in sidecar"
        flushes = client.cache_stats()["flushes"]
        assert isinstance(client.flush_cache(), str)
        stats = client.cache_stats()
        assert stats["flushes"] == flushes + 1 and stats["entries"] == 0
        client.infer(x)
        assert client.last_cache_outcome == "miss"
    with sc.Client(sidecars["tiny"], cache=False) as client:
        client.infer(x)
        assert client.last_cache_outcome == "not used"
    assert sc.cache_stats(sidecars["tiny"])["flushes"] >= 1


def test_status_metrics_and_reload(sidecars):
    name = sidecars["identity"]
    status = sc.status(name)
    assert status["ready"] and status["state"] == "ready"
    assert status["model"]["path"].endswith("identity.pt")
    assert json.loads(sc.metrics(name, "json"))
    assert "# TYPE" in sc.metrics(name, format="prometheus")
    assert sc.metrics(name)
    assert sc.reload(name)
    assert sc.status(name)["reloads"] == status["reloads"] + 1
    with pytest.raises(sc.ModelError):
        sc.reload(name, "/nonexistent/model.pt")


def test_a_restarted_sidecar_is_reconnected_to(start_sidecar):
    sidecar = start_sidecar("identity")
    with sc.Client(sidecar.name) as client:
        np.testing.assert_array_equal(client.infer(np.ones(2, np.float32))[0], np.ones(2))
        generation = client.model_info["start_generation"]
        assert sidecar.stop() == 0
        sidecar.start()
        sidecar.wait_ready()
        (out,) = client.infer(np.full(2, 3, np.float32), cache=False)
        np.testing.assert_array_equal(out, [3, 3])
        assert client.connections == 2
        assert client.model_info["start_generation"] > generation


def test_waits_release_the_gil_and_requests_in_flight_when_the_sidecar_dies_answer_sidecar_gone(start_sidecar):
    # spins never returns for an input above 1.5; declared shapes let two requests be in flight.
    sidecar = start_sidecar("spins", "--warmup-shape", "1x1", "--warmup-iterations", "1")
    stuck_input = np.full((1, 1), 2.0, np.float32)
    with sc.Client(sidecar.name) as client:
        def infer():
            with pytest.raises(sc.Timeout):
                client.infer(stuck_input, timeout=0.3, cache=False)

        assert other_thread_ran_during(infer), "no other thread ran while infer waited"
        queued = client.submit(stuck_input, timeout=30, cache=False)  # behind the one still spinning

        def wait():
            with pytest.raises(sc.Timeout):
                queued.result(timeout=0.3)

        stuck = client.submit(stuck_input, timeout=30, cache=False)
        assert other_thread_ran_during(wait), "no other thread ran while result() waited"
        os.kill(sidecar.process.pid, signal.SIGKILL)
        sidecar.process.wait()
        with pytest.raises(sc.SidecarGone) as raised:
            stuck.result(timeout=10)
        assert raised.value.code == sc.ErrorCode.SIDECAR_GONE
        # A call after it: reconnecting finds no sidecar (or it sees the old one go, if it is first to).
        with pytest.raises((sc.NotRunning, sc.SidecarGone)):
            client.infer(np.zeros((1, 1), np.float32), timeout=0.2)
