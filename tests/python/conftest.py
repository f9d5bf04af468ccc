"""Real inference-sidecar processes for the Python package's tests.

tests/CMakeLists.txt runs these with PYTHONPATH at the built package and SIDECAR_BINARY,
SIDECARCTL_BINARY and SIDECAR_MODELS_DIR set. Sidecars and clients meet in a runtime directory
of the session's own (INFERENCE_SIDECAR_RUNTIME_DIR), so no test sees another run's sockets.
"""
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

SIDECAR = os.environ.get("SIDECAR_BINARY", "")
SIDECARCTL = os.environ.get("SIDECARCTL_BINARY", "")
MODELS = os.environ.get("SIDECAR_MODELS_DIR", "")

_names = itertools.count()


def unique_name(prefix):
    return f"{prefix}-{os.getpid()}-{next(_names)}"


class Sidecar:
    """One inference-sidecar process, its output in a log file of the runtime directory."""

    def __init__(self, runtime_dir, model, *args, name=None):
        self.runtime_dir = runtime_dir
        self.model = model
        self.args = list(args)
        self.name = name or unique_name(model)
        self.start()

    def start(self):
        self.log_path = os.path.join(self.runtime_dir, unique_name(self.name) + ".log")
        with open(self.log_path, "wb") as log:
            # One worker: the machine's two cores are shared with the other sidecars of the session.
            self.process = subprocess.Popen(
                [SIDECAR, "--name", self.name, "--model", os.path.join(MODELS, self.model + ".pt"), "--workers", "1",
                 *self.args],
                stdout=log, stderr=subprocess.STDOUT)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sidecar {self.name} exited with {self.process.returncode}:\n{self.log()}")
            health = subprocess.run([SIDECARCTL, "health", "--name", self.name], capture_output=True)
            if health.returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"sidecar {self.name} not ready after {timeout} s:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=60)


def other_thread_ran_during(call, margin=0.05):
    """Runs call() (which must take well over 2 x margin seconds) and says whether another Python
    thread ran in the middle of it: it could not, were the GIL held throughout."""
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    started = time.monotonic()
    try:
        call()
    finally:
        ended = time.monotonic()
        stop.set()
        ticker.join()
    assert ended - started > 3 * margin, f"the call took only {ended - started:.3f} s"
    return any(started + margin < t < ended - margin for t in ticks)


@pytest.fixture(scope="session")
def runtime_dir():
    if not (SIDECAR and SIDECARCTL and MODELS):
        pytest.fail("SIDECAR_BINARY, SIDECARCTL_BINARY and SIDECAR_MODELS_DIR must be set (tests/CMakeLists.txt does)")
    path = tempfile.mkdtemp(prefix="sidecar-python-")  # mode 0700: the sidecar refuses a directory others may write
    previous = os.environ.get("INFERENCE_SIDECAR_RUNTIME_DIR")
    os.environ["INFERENCE_SIDECAR_RUNTIME_DIR"] = path
    yield path
    if previous is None:
        del os.environ["INFERENCE_SIDECAR_RUNTIME_DIR"]
    else:
        os.environ["INFERENCE_SIDECAR_RUNTIME_DIR"] = previous
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sidecars(runtime_dir):
    """The session's shared sidecars, started together (each loads LibTorch), by model name.

    identity and two_in_two_out accept any shape; tiny accepts 1x64 float32 only; raises raises on
    a negative input.
    """
    started = {
        "identity": Sidecar(runtime_dir, "identity"),
        "tiny": Sidecar(runtime_dir, "tiny", "--warmup-shape", "1x64", "--warmup-iterations", "1"),
        "two_in_two_out": Sidecar(runtime_dir, "two_in_two_out"),
        "raises": Sidecar(runtime_dir, "raises"),
    }
    try:
        for sidecar in started.values():
            sidecar.wait_ready()
        yield {model: sidecar.name for model, sidecar in started.items()}
    finally:
        codes = {model: sidecar.stop() for model, sidecar in started.items()}
    assert all(code == 0 for code in codes.values()), codes


@pytest.fixture
def start_sidecar(runtime_dir):
    """Starts a sidecar of the test's own (stopped, killed if need be, when the test ends)."""
    own = []

    def start(model, *args, name=None):
        sidecar = Sidecar(runtime_dir, model, *args, name=name)
        own.append(sidecar)
        return sidecar.wait_ready()

    yield start
    for sidecar in own:
        if sidecar.process.poll() is None:
            sidecar.process.kill()
            sidecar.process.wait()
