"""Serve any object honouring the policy protocol over a websocket (``stress serve``; docs/remote-policy.md).

Stand-alone on purpose: its only dependencies are numpy, msgpack and websockets, so this one file can be
copied into another environment (Cosmos Policy's, a user's OpenVLA or pi0 environment) and run there:

    from serve import PolicyServer, describe
    PolicyServer(lambda: MyPolicy(), describe(MyPolicy, chunk=16, image_size=256)).serve_forever()

The wrapped object needs ``reset(instruction, seed, mode=..., n_candidates=..., aggregation=...)`` and
``act(obs)`` returning an object with the fields of ``stress.core.policy.Decision`` (duck-typed).

Wire format: msgpack maps; numpy arrays as ``{"__ndarray__": true, "dtype", "shape", "data"}`` (raw
bytes, no pickle, no JPEG). One synchronous request per decision; every request gets exactly one reply.
"""

from __future__ import annotations

import platform
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import msgpack
import numpy as np

PROTOCOL = "stress-policy/1"
DEFAULT_HOST = "127.0.0.1"  # loopback by default: the protocol has no authentication
DEFAULT_PORT = 8765
_ARRAY_KINDS = "biuf"  # bool, signed/unsigned integers, floats: nothing that needs pickle


# --- codec -------------------------------------------------------------------------------------------
def _encode(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"arrays of dtype {obj.dtype} cannot be sent; valid kinds: bool, int, uint, float")
        obj = np.ascontiguousarray(obj)
        return {"__ndarray__": True, "dtype": obj.dtype.str, "shape": list(obj.shape), "data": obj.tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _decode(obj):
    if obj.get("__ndarray__") is True:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"array dtype {dtype} refused; valid kinds: bool, int, uint, float")
        shape = tuple(int(n) for n in obj["shape"])
        data = obj["data"]
        if len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"array of shape {shape} and dtype {dtype} does not match its {len(data)} bytes")
        return np.frombuffer(data, dtype=dtype).reshape(shape)  # read-only view: copy before writing
    return obj


def pack(message: dict) -> bytes:
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(data: bytes) -> Any:
    if isinstance(data, str):
        raise ValueError("a text frame arrived; the protocol sends binary msgpack frames only")
    return msgpack.unpackb(data, object_hook=_decode, raw=False)


# --- what the server says about itself ---------------------------------------------------------------
def describe(policy, *, version: str, chunk: int, image_size: int, cameras=("agentview", "wrist"), action_dim: int = 7,
             proprio_dim: int = 9, aggregations=(), predictions=(), settings: dict | None = None,
             software: dict | None = None, hardware: dict | None = None) -> dict:
    """The handshake metadata of a served policy (docs/remote-policy.md, "Handshake")."""
    import websockets

    return {
        "type": "metadata",
        "protocol": PROTOCOL,
        "policy": {"name": str(policy.name), "version": str(version)},
        "action_dim": int(action_dim),
        "chunk": int(chunk),
        "proprio_dim": int(proprio_dim),
        "cameras": list(cameras),
        "image_size": int(image_size),
        "image_orientation": "upright",
        "uses_images": bool(getattr(policy, "uses_images", True)),
        "modes": list(policy.modes),
        "aggregations": list(aggregations),
        "predictions": list(predictions),
        "settings": dict(settings or {}),
        "software": {"python": platform.python_version(), "numpy": np.__version__, "msgpack": ".".join(map(str, msgpack.version)),
                     "websockets": websockets.__version__, **(software or {})},
        "hardware": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(), **(hardware or {})},
    }


# --- serving -------------------------------------------------------------------------------------------
@dataclass
class ServedObservation:
    """Duck-typed twin of ``stress.core.policy.Observation`` (this module must not import the suite)."""

    images: dict
    proprio: np.ndarray
    instruction: str
    step: int
    privileged: Any = None


class BadRequest(ValueError):
    """The request itself is wrong (a missing field, a mode the server lacks): reported, connection kept."""


def _field(message: dict, name: str, kind: type, what: str):
    value = message.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"request field {name!r} must be {what}; got {type(value).__name__}")
    return value


class Session:
    """One connection's episode state around one policy object (the server keeps a pool of them)."""

    def __init__(self, policy, metadata: dict, observation_type=ServedObservation):
        self.policy, self.metadata, self.observation_type = policy, metadata, observation_type
        self.defaults = dict(metadata.get("settings", {}))
        self.mode: str | None = None
        self.planning: tuple[int, str | None] = (1, None)

    def _apply(self, settings) -> None:
        # every request sets every declared setting (defaults first): a pooled policy object carries nothing
        # over from the previous connection
        settings = settings or {}
        if not isinstance(settings, dict):
            raise BadRequest("request field 'settings' must be a map")
        unknown = sorted(set(settings) - set(self.defaults))
        if unknown:
            raise BadRequest(f"unknown setting(s) {unknown}; valid: {', '.join(self.defaults) or 'none'}")
        for name, value in {**self.defaults, **settings}.items():
            setattr(self.policy, name, value)

    def handle(self, message: dict) -> dict:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "reset":
            return self._reset(message)
        if kind in ("act", "plan"):
            return self._act(message, kind)
        raise BadRequest(f"unknown request type {kind!r}; valid: reset, act, plan")

    def _reset(self, message: dict) -> dict:
        instruction = _field(message, "instruction", str, "a string")
        seed = _field(message, "seed", int, "an integer")
        mode = _field(message, "mode", str, "a string")
        if mode not in self.metadata["modes"]:
            raise BadRequest(f"mode {mode!r} not served; valid: {', '.join(self.metadata['modes'])}")
        n_candidates, aggregation = int(message.get("n_candidates") or 1), message.get("aggregation")
        self._apply(message.get("settings"))
        self.policy.reset(instruction, seed, mode=mode, n_candidates=n_candidates, aggregation=aggregation)
        self.mode, self.planning = mode, (n_candidates, aggregation)
        return {"type": "ready"}

    def _act(self, message: dict, kind: str) -> dict:
        if self.mode is None:
            raise BadRequest(f"{kind} before reset")
        expected = "plan" if self.mode == "planning" else "act"
        if kind != expected:
            raise BadRequest(f"a {kind!r} request in an episode reset in {self.mode!r} mode; send {expected!r}")
        if kind == "plan" and (message.get("n_candidates"), message.get("aggregation")) != self.planning:
            raise BadRequest(f"plan asks for {message.get('n_candidates')} candidates / {message.get('aggregation')!r}, the episode was reset with {self.planning}")
        images = _field(message, "images", dict, "a map camera -> HxWx3 uint8 array")
        proprio = message.get("proprio")
        if not isinstance(proprio, np.ndarray):
            raise BadRequest("request field 'proprio' must be an array")
        self._apply(message.get("settings"))
        obs = self.observation_type(images={k: np.array(v) for k, v in images.items()}, proprio=np.array(proprio),
                                    instruction=str(message.get("instruction", "")), step=int(message.get("step", 0)))
        started = time.perf_counter()
        decision = self.policy.act(obs)
        infer_ms = (time.perf_counter() - started) * 1000
        return {**decision_message(decision), "timing": {"infer_ms": infer_ms}}


def _future(images) -> dict | None:
    return None if images is None else {str(k): np.asarray(v) for k, v in images.items()}


def _float(value) -> float | None:
    return None if value is None else float(value)


def decision_message(decision) -> dict:
    """A Decision (duck-typed) as a reply map."""
    candidates = []
    for c in getattr(decision, "candidates", None) or []:
        ensemble = getattr(c, "ensemble_values", None)
        candidates.append({"actions": np.asarray(c.actions, dtype=np.float64), "value": _float(c.predicted_value),
                           "future": _future(c.predicted_future), "seed": None if c.seed is None else int(c.seed),
                           "ensemble_values": None if ensemble is None else np.asarray(ensemble, dtype=np.float64)})
    chosen = getattr(decision, "chosen", None)
    return {
        "type": "decision",
        "actions": np.asarray(decision.actions, dtype=np.float64),
        "value": _float(decision.predicted_value),
        "future": _future(decision.predicted_future),
        "candidates": candidates,
        "chosen": None if chosen is None else int(chosen),
        "aggregation": getattr(decision, "aggregation", None),
        "info": dict(getattr(decision, "info", None) or {}),
    }


def error_message(exc: BaseException, kind: str) -> dict:
    first = (str(exc).strip().splitlines() or [""])[0]
    return {"type": "error", "kind": kind, "error": type(exc).__name__, "message": first[:500], "traceback": traceback.format_exc()}


class PolicyServer:
    """Websocket server around ``factory()`` policies: one Session (policy object) per connection, taken from a
    pool; one request at a time across connections (``lock``): a model on one accelerator serves one query at a
    time, and torch's own threads already use the cores."""

    def __init__(self, factory: Callable[[], Any], metadata: dict, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 observation_type=ServedObservation, user_errors: tuple[type[BaseException], ...] = (), log=None):
        self.factory, self.metadata, self.host, self.port = factory, metadata, host, port
        self.observation_type, self.user_errors = observation_type, (BadRequest, *user_errors)
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.lock = threading.Lock()
        self._idle: list = []
        self._server = None

    def _take(self):
        with self.lock:
            return self._idle.pop() if self._idle else self.factory()

    def _handler(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        policy = self._take()
        session = Session(policy, self.metadata, self.observation_type)
        try:
            ws.send(pack(self.metadata))
            for frame in ws:
                try:
                    message = unpack(frame)
                    with self.lock:
                        reply = session.handle(message)
                    data = pack(reply)
                except self.user_errors as exc:
                    data = pack(error_message(exc, "bad_request"))
                except Exception as exc:  # the policy crashed: report it with its traceback; the connection stays usable
                    self.log(f"policy error: {type(exc).__name__}: {exc}")
                    data = pack(error_message(exc, "policy_error"))
                ws.send(data)
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                self._idle.append(policy)

    def serve_forever(self, ready: Callable[[int], None] | None = None) -> None:
        from websockets.sync.server import serve

        # compression off (arrays of pixels barely compress and it costs latency); no frame-size limit (images)
        with serve(self._handler, self.host, self.port, compression=None, max_size=None) as server:
            self._server = server
            port = server.socket.getsockname()[1]
            self.port = port
            if ready:
                ready(port)
            server.serve_forever()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
