"""The ``remote`` policy backend: a client of a policy server (``stress serve``, the Cosmos Policy server, or
anything speaking docs/remote-policy.md).

The server URL reaches the backend as the ``server`` policy option of each ScenarioSpec (the CLI's
``--policy-server``): every worker process builds its own client from the spec alone, and ``--resume`` finds
it in the manifest (or takes a new one from ``--policy-server``). ``server`` is a transport option, left out of
the episode key; ``served`` (the served policy's ``name:version`` from the handshake) is in it, so a run never
mixes two models' episodes and refuses a server that now serves another one.

Failures: an unreachable server or a handshake problem raises ``PolicyUnavailable`` (the episode is stored as
an error that ``--resume`` runs again); a reply that breaks the contract raises ``MalformedResponse`` naming the
field; an error the server reports raises ``ServerError`` with the server's message. The client reconnects
(with retries) only at ``reset``: a session holds the episode's state (seed, decision counter), so a
reconnection mid-episode could not continue it exactly.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, ClassVar

import numpy as np

from stress.core.errors import UserError
from stress.core.policy import Candidate, Decision, Observation, PolicyFault, PolicyUnavailable
from stress.policies.client import API_KEY_ENV, MalformedResponse, ServerError, auth_headers, check_url, close_quietly, first_line, probe_server
from stress.policies.serve import PROTOCOL, pack, unpack

DEFAULT_TIMEOUT_S = 120.0  # per decision; a best-of-8 Cosmos query takes tens of seconds on one GPU
CONNECT_TIMEOUT_S = 10.0
CONNECT_RETRIES = (0.5, 1.0, 2.0)  # waits between connection attempts at reset (a server restarting)
DOWN_MEMORY_S = 30.0  # after failed retries, later resets within this time fail at once: a run with its server gone ends quickly

HANDSHAKE_BYTES = 16 * 2**20  # the largest metadata frame read (a Cosmos T5 cache's instruction list is far below)
REPLY_MARGIN = 2.0  # a reply may be this many times what the handshake announces (float futures, info fields)

_down_since: dict[str, float] = {}  # url -> when retries last failed (per process)


def served_id(metadata: dict) -> str:
    policy = metadata.get("policy") or {}
    return f"{policy.get('name')}:{policy.get('version')}"


def _connect(url: str, timeout: float):
    """(connection, metadata). Raises OSError / websockets errors / ValueError on failure."""
    from websockets.sync.client import connect

    # entered by hand: the connection outlives this call (one per episode sequence); close() ends it
    headers = auth_headers(os.environ.get(API_KEY_ENV))  # a server started with --api-key refuses a connection without it
    ws = connect(url, open_timeout=timeout, close_timeout=1, compression=None, max_size=HANDSHAKE_BYTES, additional_headers=headers).__enter__()
    try:
        metadata = unpack(ws.recv(timeout=timeout))
        check_metadata(metadata)
    except Exception:
        ws.close()
        raise
    return ws, metadata


def reply_limit(metadata: dict, n_candidates: int) -> int:
    """The largest reply a decision may send: the executed chunk and each candidate's, each with a future image per
    camera (at the larger of the served size and 256 px), times REPLY_MARGIN; never below HANDSHAKE_BYTES. A larger
    frame is refused from its header (websockets), the connection closed with 1009: a server cannot exhaust the
    client's memory."""
    size = max(int(metadata["image_size"]), 256)
    one = len(metadata["cameras"]) * size * size * 3 + metadata["chunk"] * metadata["action_dim"] * 8
    return max(HANDSHAKE_BYTES, int((1 + n_candidates) * one * REPLY_MARGIN))


def check_metadata(metadata) -> None:
    """The handshake's own consistency (not yet against a task): ValueError naming the field."""
    if not isinstance(metadata, dict) or metadata.get("type") != "metadata":
        raise ValueError(f"the server's first message is not {PROTOCOL} metadata (an openpi server? use --policy openpi)")
    if metadata.get("protocol") != PROTOCOL:
        hint = " (use --policy openpi)" if metadata.get("protocol") == "openpi" else ""
        raise ValueError(f"server speaks protocol {metadata.get('protocol')!r}; this suite speaks {PROTOCOL!r}{hint}")
    for name in ("action_dim", "chunk", "proprio_dim", "image_size"):
        value = metadata.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"metadata field {name!r} {value!r} is not a positive integer")
    for name in ("cameras", "modes", "aggregations", "predictions"):
        if not isinstance(metadata.get(name), list):
            raise ValueError(f"metadata field {name!r} is not a list")
    if not isinstance(metadata.get("settings", {}), dict):
        raise ValueError("metadata field 'settings' is not a map")


def probe(url: str, timeout: float = CONNECT_TIMEOUT_S) -> dict:
    """Connect once, read the handshake, disconnect: the metadata, or UserError (for checks before a run)."""
    return probe_server(url, _connect, timeout)


def check_compatible(metadata: dict, url: str, simulator, modes=(), aggregation: str | None = None, image_size: int | None = None,
                     served: str | None = None, instruction: str | None = None) -> None:
    """Does the served policy fit the task's simulator (``stress.envs.base.Simulator``: its action and proprio
    sizes, its cameras) and the run? UserError naming the first mismatch."""
    where = f"policy server {url}"
    served_instructions = metadata.get("instructions")  # optional (Cosmos: its T5 cache; anything else would load T5-11B)
    if instruction is not None and isinstance(served_instructions, list) and instruction not in served_instructions:
        raise UserError(f"{where} cannot serve the instruction {instruction!r} (not among its {len(served_instructions)} cached instructions); valid: tasks whose instruction it lists in its metadata")
    env = simulator.env_class
    if metadata["action_dim"] != env.action_dim:
        raise UserError(f"{where} has action dimension {metadata['action_dim']}; {simulator.name} needs {env.action_dim}")
    if metadata["proprio_dim"] != env.proprio_dim:
        raise UserError(f"{where} expects a {metadata['proprio_dim']}-D proprio; {simulator.name} sends {env.proprio_dim}")
    cameras = env.cameras
    for mode in modes:
        if mode not in metadata["modes"]:
            raise UserError(f"{where} has no {mode!r} mode; valid: {', '.join(metadata['modes'])}")
    if "planning" in modes and aggregation is not None and aggregation not in metadata["aggregations"]:
        raise UserError(f"{where} has no aggregation {aggregation!r}; valid: {', '.join(metadata['aggregations'])}")
    missing = [c for c in metadata["cameras"] if c not in cameras]
    if missing:
        raise UserError(f"{where} expects camera(s) {missing}; the suite renders {', '.join(cameras)}")
    if image_size is not None and metadata["image_size"] != image_size:
        raise UserError(f"{where} expects {metadata['image_size']} px images; the scenario renders {image_size} px")
    if served is not None and served_id(metadata) != served:
        raise UserError(f"{where} serves {served_id(metadata)!r}; the run was started with {served!r}")


class RemotePolicy:
    """Client of a policy server; honours the policy protocol (``stress.core.policy``)."""

    name: ClassVar[str] = "remote"
    modes: ClassVar[tuple[str, ...]] = ("direct", "planning")  # what the protocol can carry; the server says what it has
    # the server's metadata says which simulator it fits: action and proprio sizes, cameras (check_compatible)
    simulators: ClassVar[tuple[str, ...]] = ("libero", "aloha", "robosuite")
    uses_images: ClassVar[bool] = True

    def __init__(self, server: str | None = None, served: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 num_denoising_steps: int | None = None, n_futures: int | None = None, n_values: int | None = None):
        self.server, self.served, self.timeout_s = server, served, float(timeout_s)
        # explicit settings sent with every request; the server's own values fill the rest (metadata "settings")
        self._settings = {k: v for k, v in (("num_denoising_steps", num_denoising_steps), ("n_futures", n_futures), ("n_values", n_values)) if v is not None}
        self._ws = None
        self.metadata: dict | None = None
        self._episode: dict[str, Any] | None = None
        self._step_timing: dict[str, float] = {}
        self._limit = HANDSHAKE_BYTES

    @classmethod
    def check_options(cls, options: dict) -> None:
        check_url(options.get("server"))
        timeout = options.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise UserError(f"timeout_s {timeout!r} invalid; valid: seconds > 0")

    # --- settings the policy-layer perturbations adjust (policy_noise: denoising steps, precision) --------------
    def _setting(self, name: str):
        if name in self._settings:
            return self._settings[name]
        self._ensure_connected()
        if name not in self.metadata.get("settings", {}):
            raise AttributeError(name)
        return self.metadata["settings"][name]

    @property
    def cameras(self) -> tuple[str, ...] | None:
        """The cameras the server's handshake declares (the only ones sent, so the only ones the episode renders);
        None before the first connection."""
        return tuple(self.metadata["cameras"]) if self.metadata is not None else None

    @property
    def num_denoising_steps(self):
        return self._setting("num_denoising_steps")

    @num_denoising_steps.setter
    def num_denoising_steps(self, value):
        self._settings["num_denoising_steps"] = value

    @property
    def precision(self):
        return self._setting("precision")

    @precision.setter
    def precision(self, value):
        self._settings["precision"] = value

    # --- connection ---------------------------------------------------------------------------------------
    def _ensure_connected(self) -> None:
        if self._ws is not None:
            return
        url = check_url(self.server)
        if time.monotonic() - _down_since.get(url, -math.inf) < DOWN_MEMORY_S:
            raise PolicyUnavailable(f"policy server {url} unreachable (it failed moments ago)")
        last = None
        for wait in (*CONNECT_RETRIES, None):
            try:
                self._ws, metadata = _connect(url, CONNECT_TIMEOUT_S)
                break
            except ValueError as exc:  # a handshake that breaks the protocol: retrying will not help
                raise PolicyUnavailable(f"policy server {url} is incompatible: {exc}") from None
            except Exception as exc:
                last = exc
                if wait is not None:
                    time.sleep(wait)
        else:
            _down_since[url] = time.monotonic()
            raise PolicyUnavailable(f"policy server {url} unreachable ({first_line(last)})")
        _down_since.pop(url, None)
        if self.served is not None and served_id(metadata) != self.served:
            self.close()
            raise PolicyUnavailable(f"policy server {url} now serves {served_id(metadata)!r}; the run was started with {self.served!r}")
        self.metadata = metadata
        unknown = sorted(set(self._settings) - set(metadata.get("settings", {})))
        if unknown:
            self.close()
            raise PolicyUnavailable(f"policy server {url} has no setting(s) {unknown}; valid: {', '.join(metadata.get('settings', {})) or 'none'}")

    def close(self) -> None:
        close_quietly(self._ws)
        self._ws = None

    def _request(self, message: dict) -> dict:
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            raise PolicyUnavailable(f"connection to policy server {self.server} lost mid-episode")
        try:
            started = time.perf_counter()
            self._ws.send(pack(message))
            reply = unpack(self._ws.recv(timeout=self.timeout_s))
            self._step_timing = {"round_trip_ms": (time.perf_counter() - started) * 1000}
        except TimeoutError:
            self.close()  # the server may still answer later; that reply must never be read as the next one's
            raise PolicyUnavailable(f"policy server {self.server} gave no reply within {self.timeout_s:g} s") from None
        except (ConnectionClosed, OSError) as exc:
            self.close()
            if getattr(getattr(exc, "rcvd", None), "code", None) == 1009 and getattr(exc, "rcvd_then_sent", False):  # the server refused our frame
                raise PolicyUnavailable(f"policy server {self.server} refused a request frame as too large (close code 1009; its --max-frame-mb)") from None
            if getattr(getattr(exc, "sent", None), "code", None) == 1009:  # we refused it: a reply over reply_limit
                raise MalformedResponse(f"reply larger than {self._limit} bytes (the handshake's images x candidates, twice); refused unread") from None
            raise PolicyUnavailable(f"policy server {self.server} closed the connection ({type(exc).__name__})") from None
        except (ValueError, TypeError) as exc:  # undecodable frame
            raise MalformedResponse(f"undecodable reply ({exc})") from None
        if not isinstance(reply, dict):
            raise MalformedResponse(f"reply is a {type(reply).__name__}, not a map")
        if reply.get("type") == "error":
            raise ServerError(f"{reply.get('kind', 'error')}: {reply.get('error', '')}: {reply.get('message', '')}".strip())
        return reply

    # --- protocol ------------------------------------------------------------------------------------------
    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        if self._ws is not None and self._ws.protocol.state.name != "OPEN":
            self.close()
        self._ensure_connected()
        self._episode = {"instruction": instruction, "seed": int(seed), "mode": mode,
                         "n_candidates": int(n_candidates) if mode == "planning" else 1, "aggregation": aggregation if mode == "planning" else None}
        self._limit = reply_limit(self.metadata, self._episode["n_candidates"])
        self._ws.protocol.max_message_size = self._limit  # read by websockets at every frame's header
        reply = self._request({"type": "reset", **self._episode, "settings": dict(self._settings)})
        if reply.get("type") != "ready":
            raise MalformedResponse(f"reset reply type {reply.get('type')!r}; expected 'ready'")

    def act(self, obs: Observation) -> Decision:
        if self._episode is None:
            raise PolicyFault("act before reset")
        planning = self._episode["mode"] == "planning"
        # the cameras the handshake declares, no others (a simulator may render more than the served policy reads)
        images = {camera: image for camera, image in obs.images.items() if camera in self.metadata["cameras"]}
        message = {"type": "plan" if planning else "act", "images": images, "proprio": np.asarray(obs.proprio, dtype=np.float64),
                   "instruction": obs.instruction, "step": int(obs.step), "settings": dict(self._settings)}
        if planning:
            message.update(n_candidates=self._episode["n_candidates"], aggregation=self._episode["aggregation"])
        reply = self._request(message)
        decision = parse_decision(reply, self.metadata, planning, self._episode["n_candidates"])
        decision.info["server_timing"] = {**(reply.get("timing") or {}), **self._step_timing}
        return decision


# --- validation of a reply ---------------------------------------------------------------------------------
def _array(value, field: str, shape: tuple, dtype_kinds: str = "f") -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise MalformedResponse(f"field {field!r} is a {type(value).__name__}, not an array")
    if value.dtype.kind not in dtype_kinds:
        raise MalformedResponse(f"field {field!r} has dtype {value.dtype}")
    if len(value.shape) != len(shape) or any(want is not None and got != want for got, want in zip(value.shape, shape)):
        expected = "(" + ", ".join("*" if n is None else str(n) for n in shape) + ")"
        raise MalformedResponse(f"field {field!r} has shape {value.shape}; expected {expected}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise MalformedResponse(f"field {field!r} holds NaN or infinite values")
    return np.array(value)  # a writable copy: decoded arrays are read-only views of the frame


def _unit(value, field: str, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedResponse(f"field {field!r} is {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise MalformedResponse(f"field {field!r} is {value}")
    if not 0.0 <= value <= 1.0:
        raise MalformedResponse(f"field {field!r} {value} outside [0, 1]")
    return float(value)


def _futures(value, field: str) -> dict[str, np.ndarray] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedResponse(f"field {field!r} is not a map camera -> image")
    out = {}
    for camera, image in value.items():
        out[str(camera)] = _array(image, f"{field}.{camera}", (None, None, 3), "uif")
        if image.dtype != np.uint8:
            raise MalformedResponse(f"field '{field}.{camera}' has dtype {image.dtype}; expected uint8")
    return out


def parse_decision(reply: dict, metadata: dict, planning: bool, n_candidates: int) -> Decision:
    """A decision reply as a Decision, every field checked (MalformedResponse names the first bad one)."""
    if reply.get("type") != "decision":
        raise MalformedResponse(f"reply type {reply.get('type')!r}; expected 'decision'")
    chunk = metadata["chunk"]
    action_dim = metadata["action_dim"]  # checked against the simulator's before the run started
    actions = _array(reply.get("actions"), "actions", (chunk, action_dim))
    value = _unit(reply.get("value"), "value")
    future = _futures(reply.get("future"), "future")
    candidates_raw = reply.get("candidates") or []
    if not isinstance(candidates_raw, list):
        raise MalformedResponse("field 'candidates' is not a list")
    candidates = []
    for i, c in enumerate(candidates_raw):
        where = f"candidates[{i}]"
        if not isinstance(c, dict):
            raise MalformedResponse(f"field {where!r} is not a map")
        ensemble = c.get("ensemble_values")
        if ensemble is not None:
            ensemble = _array(ensemble, f"{where}.ensemble_values", (None,))
            if ((ensemble < 0) | (ensemble > 1)).any():
                raise MalformedResponse(f"field '{where}.ensemble_values' has values outside [0, 1]")
        seed = c.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise MalformedResponse(f"field '{where}.seed' is not an integer")
        candidates.append(Candidate(actions=_array(c.get("actions"), f"{where}.actions", (chunk, action_dim)),
                                    predicted_value=_unit(c.get("value"), f"{where}.value"),
                                    predicted_future=_futures(c.get("future"), f"{where}.future"), seed=seed, ensemble_values=ensemble))
    chosen = reply.get("chosen")
    if planning:
        if len(candidates) != n_candidates:
            raise MalformedResponse(f"field 'candidates' has {len(candidates)} entries; the episode asked for {n_candidates}")
        if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(candidates):
            raise MalformedResponse(f"field 'chosen' {chosen!r} is not a candidate index 0-{len(candidates) - 1}")
    elif chosen is not None:
        raise MalformedResponse(f"field 'chosen' {chosen!r} in direct mode; expected null")
    info = reply.get("info") or {}
    if not isinstance(info, dict):
        raise MalformedResponse("field 'info' is not a map")
    aggregation = reply.get("aggregation")
    if aggregation is not None and not isinstance(aggregation, str):
        raise MalformedResponse("field 'aggregation' is not a string")
    return Decision(actions=actions, predicted_value=value, predicted_future=future, candidates=candidates, chosen=chosen,
                    aggregation=aggregation, info=dict(info))
