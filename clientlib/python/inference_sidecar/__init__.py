"""Run a model served by inference-sidecar on this host, from Python, through shared memory.

    import numpy as np
    import inference_sidecar as sc

    with sc.Client("resnet") as client:                # waits up to 5 s for the sidecar to be ready
        (logits,) = client.infer(np.zeros((1, 3, 224, 224), np.float32), timeout=0.1)

infer() always returns a list, one array per model output. Errors raise SidecarError subclasses.
A Client is not thread-safe: give each thread its own (calls release the GIL while they wait).
docs/python.md has the rest: torch tensors, submit(), the zero-copy path, the cache.
"""
import enum as _enum

from . import _native
from ._native import Client, Request, __version__, cache_stats, metrics, reload, status

__all__ = [
    "Client", "Request", "status", "metrics", "reload", "cache_stats", "ErrorCode", "SidecarError",
    "NotRunning", "NotReady", "Rejected", "ModelError", "Timeout", "SidecarGone", "PermissionDenied", "Overloaded",
]

_CODE_NAMES = _native.error_code_names()

# The library's ErrorCode: ErrorCode.NOT_RUNNING, ErrorCode.MODEL_ERROR... (numbers as in the C API).
ErrorCode = _enum.IntEnum("ErrorCode", {name.upper().replace(" ", "_"): value for value, name in enumerate(_CODE_NAMES)})


class SidecarError(Exception):
    """A call the sidecar or the client library refused: `code` (an ErrorCode) and `message`."""

    def __init__(self, code, message):
        super().__init__(code, message)
        try:
            self.code = ErrorCode(code)
        except ValueError:  # a code newer than this package
            self.code = code
        self.message = message

    def __str__(self):
        name = _CODE_NAMES[self.code] if 0 <= self.code < len(_CODE_NAMES) else f"error {int(self.code)}"
        return f"{name}: {self.message}"


class NotRunning(SidecarError):
    """No sidecar of that name runs (no socket, or one left by a sidecar that is gone)."""


class NotReady(SidecarError):
    """The sidecar runs but did not finish warming up in time."""


class Rejected(SidecarError):
    """The inputs were refused (dtype, shape, size); the message says what is expected."""


class ModelError(SidecarError):
    """The model raised (the message is TorchScript's), or returned something other than tensors."""


class Timeout(SidecarError):
    """No answer within the timeout, or the request's deadline passed before it could run."""


class SidecarGone(SidecarError):
    """The sidecar stopped or crashed during the call; the next call reconnects."""


class PermissionDenied(SidecarError):
    """The socket, or the sidecar's --allow-user/--allow-group, do not admit this user; or the
    process behind the socket is not the sidecar's user."""


class Overloaded(SidecarError):
    """No room now: requests in flight, clients, memory, or an earlier timed-out request still running."""


_CLASS_OF = {
    "NOT_RUNNING": NotRunning,
    "NOT_READY": NotReady,
    "INVALID_ARGUMENT": Rejected,
    "REJECTED": Rejected,
    "OUTPUT_TOO_LARGE": Rejected,
    "MODEL_ERROR": ModelError,
    "UNSUPPORTED_OUTPUT": ModelError,
    "TIMEOUT": Timeout,
    "DEADLINE_EXCEEDED": Timeout,
    "SIDECAR_GONE": SidecarGone,
    "SHUTTING_DOWN": SidecarGone,
    "PERMISSION_DENIED": PermissionDenied,
    "UNTRUSTED": PermissionDenied,
    "OVERLOADED": Overloaded,
    "BUSY": Overloaded,
    "TOO_MANY_CLIENTS": Overloaded,
    "OUT_OF_MEMORY": Overloaded,
    # VERSION_MISMATCH, CANCELLED, PROTOCOL_ERROR and codes added later: SidecarError itself.
}

_native._register_errors(SidecarError, [_CLASS_OF.get(code.name, SidecarError) for code in ErrorCode])
