"""Serve any object honouring the policy protocol over a websocket (``stress serve``; docs/remote-policy.md).

Stand-alone on purpose: its only dependencies are numpy, msgpack and websockets, so this one file can be
copied into another environment (Cosmos Policy's, a user's OpenVLA or pi0 environment) and run there:

    from serve import PolicyServer, describe
    PolicyServer(lambda: MyPolicy(), describe(MyPolicy, chunk=16, image_size=256)).serve_forever()

The wrapped object needs ``reset(instruction, seed, mode=..., n_candidates=..., aggregation=...)`` and
``act(obs)`` returning an object with the fields of ``stress.core.policy.Decision`` (duck-typed).

Wire format: msgpack maps; numpy arrays as ``{"__ndarray__": true, "dtype", "shape", "data"}`` (raw
bytes, no pickle, no JPEG). One synchronous request per decision; every request gets exactly one reply.
``wire="openpi"`` speaks openpi's protocol instead (``OpenpiSession``): the request is openpi's observation
dict, the reply ``{"actions", "server_timing"}``; its codec is openpi-client's ``msgpack_numpy`` format
(tested byte for byte against openpi-client, which this file must not need).

Security: a key (``api_key``) is checked on the upgrade request (openpi's ``Authorization: Api-Key KEY``
header), in constant time, before any frame reaches the policy; every frame is bounded (``max_frame``, from
the handshake: cameras x image size, with a margin) and a larger one is refused from its header, before its
payload is read, the connection closed with 1009 "message too big".
"""

from __future__ import annotations

import hmac
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
WIRES = ("stress", "openpi")  # stress-policy/1 (the default), openpi's protocol
DEFAULT_HOST = "127.0.0.1"  # loopback by default: any other address needs a key
DEFAULT_PORT = 8765
LOOPBACK = ("127.0.0.1", "localhost", "::1")
FRAME_MARGIN = 2.0  # a request frame may be this many times the handshake's images (float images, extra fields)
FRAME_SLACK = 1 << 20  # plus this many bytes (proprio, instruction, settings, msgpack overhead)
OPENPI_IMAGE_SIZE = 224  # openpi's example clients resize every image to 224 x 224
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


# --- openpi's codec (openpi_client.msgpack_numpy's format: bytes keys; numpy scalars as __npgeneric__) ---------
def _openpi_encode(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"arrays of dtype {obj.dtype} cannot be sent; valid kinds: bool, int, uint, float")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def _openpi_decode(obj):
    if b"__ndarray__" in obj:
        return _decode({"__ndarray__": True, "dtype": obj[b"dtype"], "shape": obj[b"shape"], "data": obj[b"data"]})
    if b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"scalar dtype {dtype} refused; valid kinds: bool, int, uint, float")
        return dtype.type(obj[b"data"])
    return obj


def openpi_pack(message) -> bytes:
    return msgpack.packb(message, default=_openpi_encode, use_bin_type=True)


def openpi_unpack(data: bytes) -> Any:
    if isinstance(data, str):
        raise ValueError("a text frame arrived; openpi's protocol sends binary msgpack frames")
    return msgpack.unpackb(data, object_hook=_openpi_decode, raw=False)


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


# --- openpi's protocol ----------------------------------------------------------------------------------------
def axisangle2quat(vec) -> np.ndarray:
    """robosuite's axisangle2quat (xyzw): the inverse of the quat2axisangle openpi's LIBERO client sends."""
    vec = np.asarray(vec, dtype=np.float64)
    angle = float(np.linalg.norm(vec))
    if np.isclose(angle, 0.0):
        return np.array([0.0, 0.0, 0.0, 1.0])
    axis = vec / angle
    return np.concatenate([axis * np.sin(angle / 2.0), [np.cos(angle / 2.0)]])


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """An HxWx3 uint8 image resized to size x size, bilinear with pixel centres aligned (numpy only: this file
    stands alone)."""
    image = np.asarray(image)
    if image.shape[0] == size and image.shape[1] == size:
        return np.ascontiguousarray(image)

    def axis(n_in: int):
        x = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(x).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), x - lo

    (r0, r1, fr), (c0, c1, fc) = axis(image.shape[0]), axis(image.shape[1])
    img = image.astype(np.float64)
    rows = img[r0] * (1 - fr)[:, None, None] + img[r1] * fr[:, None, None]
    out = rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


OPENPI_LIBERO_KEYS = ("observation/image", "observation/wrist_image", "observation/state", "prompt")


class OpenpiSession:
    """openpi's protocol around one policy object (LIBERO-shaped: cameras agentview and wrist, a 9-D proprio).

    The request is openpi's LIBERO observation (``observation/image`` and ``observation/wrist_image``: 224 px,
    rotated 180 degrees from MuJoCo's raw render; ``observation/state``: eef position, axis-angle, gripper qpos;
    ``prompt``); the reply ``{"actions": (chunk, 7), "server_timing": {"infer_ms"}}``. The images are turned
    upright (mirrored back) and resized to the policy's ``image_size``; the state becomes our 9-D proprio.
    openpi's protocol has no reset: the connection is the episode stream, and the policy is reset (direct mode,
    the server's ``seed``) at the first request and whenever the prompt changes."""

    def __init__(self, policy, metadata: dict, observation_type=ServedObservation, seed: int = 0):
        check_openpi_servable(metadata)
        self.policy, self.metadata, self.observation_type, self.seed = policy, metadata, observation_type, int(seed)
        self.defaults = dict(metadata.get("settings", {}))
        self.prompt: str | None = None
        self.step = 0

    def handle(self, message) -> dict:
        if not isinstance(message, dict):
            raise BadRequest(f"request is a {type(message).__name__}; openpi's protocol sends the observation map")
        missing = [k for k in OPENPI_LIBERO_KEYS if k not in message]
        if missing:
            raise BadRequest(f"observation misses {missing}; valid: {', '.join(OPENPI_LIBERO_KEYS)} (openpi's LIBERO client)")
        prompt = message["prompt"]
        if not isinstance(prompt, str):
            raise BadRequest(f"'prompt' must be a string; got {type(prompt).__name__}")
        state = message["observation/state"]
        if not isinstance(state, np.ndarray) or state.shape != (8,):
            raise BadRequest(f"'observation/state' must be an 8-D array (eef position, axis-angle, gripper qpos); got {getattr(state, 'shape', type(state).__name__)}")
        images = {}
        for camera, key in zip(("agentview", "wrist"), OPENPI_LIBERO_KEYS[:2]):
            image = message[key]
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise BadRequest(f"{key!r} must be an HxWx3 uint8 array; got {getattr(image, 'shape', type(image).__name__)}")
            images[camera] = resize_bilinear(image[:, ::-1], int(self.metadata["image_size"]))  # openpi's view -> upright
        state = state.astype(np.float64)
        proprio = np.concatenate([state[6:8], state[0:3], axisangle2quat(state[3:6])])
        if prompt != self.prompt:
            for name, value in self.defaults.items():
                setattr(self.policy, name, value)
            self.policy.reset(prompt, self.seed, mode="direct", n_candidates=1, aggregation=None)
            self.prompt, self.step = prompt, 0
        obs = self.observation_type(images=images, proprio=proprio, instruction=prompt, step=self.step)
        started = time.perf_counter()
        decision = self.policy.act(obs)
        infer_ms = (time.perf_counter() - started) * 1000
        actions = np.asarray(decision.actions, dtype=np.float64)
        self.step += len(actions)
        return {"actions": actions, "server_timing": {"infer_ms": infer_ms}}


def check_openpi_servable(metadata: dict) -> None:
    """openpi's wire carries LIBERO's observation here: ValueError otherwise."""
    if list(metadata.get("cameras", ()))[:2] != ["agentview", "wrist"] or metadata.get("proprio_dim") != 9 or "direct" not in metadata.get("modes", ()):
        raise ValueError(f"--wire openpi serves LIBERO-shaped policies (cameras agentview, wrist; 9-D proprio; direct mode); "
                         f"this one has cameras {metadata.get('cameras')}, a {metadata.get('proprio_dim')}-D proprio")


# --- the server --------------------------------------------------------------------------------------------------
def frame_limit(metadata: dict) -> int:
    """The largest request frame the handshake allows: every camera's image at the larger of the served size and
    openpi's 224 px, RGB uint8, times FRAME_MARGIN, plus FRAME_SLACK."""
    size = max(int(metadata.get("image_size", 0)), OPENPI_IMAGE_SIZE)
    return int(len(metadata.get("cameras", ())) * size * size * 3 * FRAME_MARGIN) + FRAME_SLACK


def check_exposure(host: str, api_key: str | None) -> None:
    """Any address but loopback needs a key: ValueError otherwise."""
    if host not in LOOPBACK and not api_key:
        raise ValueError(f"binding {host} exposes the policy to the network; give a key (--api-key or STRESS_POLICY_API_KEY), or bind 127.0.0.1 and tunnel")


class PolicyServer:
    """Websocket server around ``factory()`` policies: one Session (policy object) per connection, taken from a
    pool; one request at a time across connections (``lock``): a model on one accelerator serves one query at a
    time, and torch's own threads already use the cores."""

    def __init__(self, factory: Callable[[], Any], metadata: dict, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 observation_type=ServedObservation, user_errors: tuple[type[BaseException], ...] = (), log=None,
                 wire: str = "stress", api_key: str | None = None, max_frame: int | None = None, seed: int = 0):
        if wire not in WIRES:
            raise ValueError(f"wire {wire!r} unknown; valid: {', '.join(WIRES)}")
        check_exposure(host, api_key)
        if wire == "openpi":
            check_openpi_servable(metadata)
        self.factory, self.metadata, self.host, self.port = factory, metadata, host, port
        self.wire, self.api_key, self.seed = wire, api_key, int(seed)
        self.max_frame = frame_limit(metadata) if max_frame is None else int(max_frame)
        # openpi's clients read the metadata as free-form; "protocol" tells a stress-policy/1 client it is not its own
        self.handshake = {**metadata, "protocol": "openpi"} if wire == "openpi" else metadata
        self.observation_type, self.user_errors = observation_type, (BadRequest, *user_errors)
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.lock = threading.Lock()
        self._idle: list = []
        self._server = None

    def _take(self):
        with self.lock:
            return self._idle.pop() if self._idle else self.factory()

    def _authorise(self, connection, request):
        """websockets' process_request: ``/healthz`` answers 200 (openpi's health check); with a key, an upgrade
        without ``Authorization: Api-Key KEY`` (compared in constant time) is refused with 401, before any frame."""
        if request.path == "/healthz":
            return connection.respond(200, "OK\n")
        if self.api_key:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                self.log(f"refused a connection from {connection.remote_address[0]}: no valid key")
                return connection.respond(401, "a valid key is needed: header Authorization: Api-Key KEY\n")
        return None

    def _handler(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        policy = self._take()
        openpi = self.wire == "openpi"
        session = OpenpiSession(policy, self.metadata, self.observation_type, self.seed) if openpi else Session(policy, self.metadata, self.observation_type)
        encode, decode = (openpi_pack, openpi_unpack) if openpi else (pack, unpack)
        try:
            ws.send(encode(self.handshake))
            for frame in ws:
                try:
                    try:
                        message = decode(frame)
                    except Exception as exc:  # a text frame, invalid msgpack, a bad array: the request is wrong
                        raise BadRequest(f"undecodable request ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})") from None
                    with self.lock:
                        reply = session.handle(message)
                    data = encode(reply)
                except Exception as exc:
                    user = isinstance(exc, self.user_errors)
                    if not user:
                        self.log(f"policy error: {type(exc).__name__}: {exc}")
                    if openpi:  # openpi's servers: the traceback as a text frame, then the connection closed
                        ws.send(traceback.format_exc())
                        ws.close(1011, "Internal server error. Traceback included in previous frame.")
                        return
                    # the policy crashed (or the request was wrong): reported, the connection stays usable
                    data = pack(error_message(exc, "bad_request" if user else "policy_error"))
                ws.send(data)
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                self._idle.append(policy)

    def serve_forever(self, ready: Callable[[int], None] | None = None) -> None:
        from websockets.sync.server import serve

        # compression off (arrays of pixels barely compress and it costs latency); a frame larger than max_frame is
        # refused from its header (websockets checks the length before reading the payload) and closed with 1009
        with serve(self._handler, self.host, self.port, compression=None, max_size=self.max_frame, process_request=self._authorise) as server:
            self._server = server
            port = server.socket.getsockname()[1]
            self.port = port
            if ready:
                ready(port)
            server.serve_forever()

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
