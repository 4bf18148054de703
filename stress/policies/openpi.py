"""The ``openpi`` policy backend: a client of any server speaking openpi's websocket protocol (openpi's
``serve_policy.py`` for pi0 / pi0-FAST / pi0.5, harnesses built on it, ``stress serve --wire openpi``).

The wire is openpi's own code: frames are packed and unpacked by ``openpi_client.msgpack_numpy`` and images
resized by ``openpi_client.image_tools``; the observation and action mappings are those of openpi's example
clients (docs/remote-policy.md, "openpi's protocol"). The connection is ours (websockets, like openpi's client)
only to add what a long unattended run needs: timeouts, retries at ``reset``, and errors that name the problem.

openpi's protocol has no episode: no reset, no seed, no planning. So this backend has the ``direct`` mode only,
its episodes are as deterministic as the server is, and a reply carries actions only (the world-model and
value tables say so). The key is read from the environment variable ``STRESS_POLICY_API_KEY`` (``--api-key``
sets it): it is never written into a run's manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
from openpi_client import image_tools, msgpack_numpy
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from stress.core.errors import UserError
from stress.core.policy import Decision, Observation, PolicyFault, PolicyUnavailable
from stress.policies.client import API_KEY_ENV, MalformedResponse, ServerError, auth_headers, check_chunk, check_url, close_quietly, first_line, probe_server

DEFAULT_REPLAN_STEPS = 5  # openpi's examples/libero/main.py: replan_steps (ALOHA's: its Mapping's)
RESIZE = 224  # openpi's examples: resize_size (both LIBERO and ALOHA)
RENDER_SIZE = 256  # openpi's LIBERO_ENV_RESOLUTION: the size its LIBERO client renders, before resizing to 224
DEFAULT_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0
CONNECT_RETRIES = (0.5, 1.0, 2.0)
MAX_REPLY_BYTES = 64 * 2**20  # a reply is a chunk of actions (and whatever extras the server adds): far below this


# --- observation mappings: openpi's example clients, field for field ----------------------------------------
def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """robosuite's quat2axisangle (xyzw), as openpi's LIBERO client copies it: w clipped to [-1, 1]; a null
    rotation is zeros."""
    quat = np.array(quat, dtype=np.float64)
    quat[3] = min(max(quat[3], -1.0), 1.0)
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def _openpi_view(image: np.ndarray) -> np.ndarray:
    """Our upright image (MuJoCo's render flipped vertically) as openpi's LIBERO client sees it: it rotates the
    raw render by 180 degrees (``img[::-1, ::-1]``), which is our upright image mirrored left-right."""
    return np.ascontiguousarray(image[:, ::-1])


def libero_request(obs: Observation) -> dict:
    """openpi's examples/libero/main.py: both images rotated 180 degrees from the raw render and resized with
    padding to 224; the state eef position (3) + axis-angle (3) + gripper qpos (2); the prompt verbatim."""
    proprio = np.asarray(obs.proprio, dtype=np.float64)  # ours: gripper qpos (2), eef position (3), eef quaternion xyzw (4)
    image = image_tools.convert_to_uint8(image_tools.resize_with_pad(_openpi_view(obs.images["agentview"]), RESIZE, RESIZE))
    wrist = image_tools.convert_to_uint8(image_tools.resize_with_pad(_openpi_view(obs.images["wrist"]), RESIZE, RESIZE))
    state = np.concatenate((proprio[2:5], quat2axisangle(proprio[5:9]), proprio[0:2]))
    return {"observation/image": image, "observation/wrist_image": wrist, "observation/state": state, "prompt": str(obs.instruction)}


def aloha_request(obs: Observation) -> dict:
    """openpi's examples/aloha_sim (env.py): gym-aloha's top camera (rendered 480x640 with shadows, the suite's
    ``image_size`` 480) resized with padding to 224, ``convert_to_uint8``, transposed HWC -> CHW, sent as
    ``images.cam_high``; the 14-D joint state (gym-aloha's ``agent_pos``) as ``state``. openpi's ALOHA client
    sends no prompt (the server's ``default_prompt`` applies: "Transfer cube" for pi0_aloha_sim), so neither
    does this one."""
    image = image_tools.convert_to_uint8(image_tools.resize_with_pad(obs.images["top"], RESIZE, RESIZE))
    return {"state": np.asarray(obs.proprio, dtype=np.float64), "images": {"cam_high": np.transpose(image, (2, 0, 1))}}


@dataclass(frozen=True)
class Mapping:
    simulator: str
    cameras: tuple[str, ...]  # ours, which the request needs
    action_dim: int
    build: Callable[[Observation], dict]
    render_size: int  # the suite's image_size that renders what openpi's client renders
    replan_steps: int  # openpi's example client: actions executed per query


MAPPINGS = {
    "libero": Mapping("libero", ("agentview", "wrist"), 7, libero_request, RENDER_SIZE, DEFAULT_REPLAN_STEPS),
    # examples/aloha_sim/main.py: ActionChunkBroker(action_horizon=10); 480: gym-aloha's own 480x640 camera, shadows on
    "aloha": Mapping("aloha", ("top",), 14, aloha_request, 480, 10),
}


def mapping_for(obs: Observation) -> Mapping:
    for mapping in MAPPINGS.values():
        if set(mapping.cameras) <= set(obs.images):
            return mapping
    raise PolicyFault(f"no openpi mapping for cameras {sorted(obs.images)}; valid: {', '.join(MAPPINGS)}")


def mapping_of(simulator: str) -> Mapping:
    """The mapping of a simulator, or UserError naming the ones there are."""
    if simulator not in MAPPINGS:
        raise UserError(f"--policy openpi has no mapping for simulator {simulator!r}; valid: {', '.join(MAPPINGS)}")
    return MAPPINGS[simulator]


# --- connection ----------------------------------------------------------------------------------------------
def api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


def _connect(url: str, timeout: float):
    """(connection, metadata) as openpi's client makes them (its Api-Key header, compression off)."""
    headers = auth_headers(api_key())
    # entered by hand: the connection outlives this call; close() ends it
    ws = connect(url, open_timeout=timeout, close_timeout=1, compression=None, max_size=MAX_REPLY_BYTES, additional_headers=headers).__enter__()
    try:
        frame = ws.recv(timeout=timeout)
        if isinstance(frame, str):
            raise ValueError("the server's first frame is text, not openpi's msgpack metadata")
        metadata = msgpack_numpy.unpackb(frame)
    except Exception:
        ws.close()
        raise
    if not isinstance(metadata, dict):
        ws.close()
        raise ValueError(f"the server's metadata is a {type(metadata).__name__}, not a map")
    if metadata.get("type") == "metadata" and str(metadata.get("protocol", "")).startswith("stress-policy/"):
        ws.close()
        raise ValueError(f"the server speaks {metadata['protocol']}, not openpi's protocol (use --policy remote, or serve it with --wire openpi)")
    return ws, metadata


def served_id(metadata: dict) -> str:
    """openpi's metadata is free-form (the served policy's config): the run keys its episodes by its digest."""
    text = json.dumps(metadata, sort_keys=True, default=repr, separators=(",", ":"))
    return "openpi:" + hashlib.sha256(text.encode()).hexdigest()[:12]


def probe(url: str, timeout: float = CONNECT_TIMEOUT_S) -> dict:
    """Connect once, read the metadata, disconnect: the metadata, or UserError (checks before a run)."""
    return probe_server(url, _connect, timeout)


def check_replan_steps(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"replan_steps {value!r} invalid; valid: an integer >= 1 (openpi's examples: {DEFAULT_REPLAN_STEPS})")
    return value


# --- the backend ---------------------------------------------------------------------------------------------
class OpenpiPolicy:
    """Client of an openpi policy server; honours the policy protocol (``stress.core.policy``)."""

    name: ClassVar[str] = "openpi"
    modes: ClassVar[tuple[str, ...]] = ("direct",)  # openpi's protocol carries one chunk per request: no candidates
    simulators: ClassVar[tuple[str, ...]] = tuple(MAPPINGS)
    uses_images: ClassVar[bool] = True
    actions_only: ClassVar[bool] = True  # no value, no predicted future: the report says "not provided by this policy"

    def __init__(self, server: str | None = None, served: str | None = None, replan_steps: int | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, simulator: str | None = None):
        self.server, self.served, self.timeout_s = server, served, float(timeout_s)
        # the simulator driven (the CLI sets it): its mapping says which cameras a request carries, so only those are rendered
        self.simulator = None if simulator is None else mapping_of(simulator).simulator
        # None: the mapping's own (openpi's example client for the simulator observed)
        self.replan_steps = None if replan_steps is None else check_replan_steps(replan_steps)
        self._ws = None
        self.metadata: dict | None = None
        self._packer = msgpack_numpy.Packer()
        self._instruction: str | None = None

    @property
    def cameras(self) -> tuple[str, ...] | None:
        """The cameras openpi's example client of the simulator sends (ALOHA: ``top`` only); None (every camera)
        when the simulator was not given."""
        return MAPPINGS[self.simulator].cameras if self.simulator is not None else None

    @classmethod
    def check_options(cls, options: dict) -> None:
        check_url(options.get("server"))
        if options.get("simulator") is not None:
            mapping_of(options["simulator"])
        if options.get("replan_steps") is not None:
            check_replan_steps(options["replan_steps"])
        timeout = options.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise UserError(f"timeout_s {timeout!r} invalid; valid: seconds > 0")

    def _ensure_connected(self) -> None:
        if self._ws is not None:
            return
        url = check_url(self.server)
        last = None
        for wait in (*CONNECT_RETRIES, None):
            try:
                self._ws, metadata = _connect(url, CONNECT_TIMEOUT_S)
                break
            except ValueError as exc:
                raise PolicyUnavailable(f"policy server {url} is incompatible: {exc}") from None
            except Exception as exc:
                last = exc
                if wait is not None:
                    time.sleep(wait)
        else:
            raise PolicyUnavailable(f"policy server {url} unreachable ({first_line(last)})")
        if self.served is not None and served_id(metadata) != self.served:
            self.close()
            raise PolicyUnavailable(f"policy server {url} now serves {served_id(metadata)!r}; the run was started with {self.served!r}")
        self.metadata = metadata

    def close(self) -> None:
        close_quietly(self._ws)
        self._ws = None

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        """openpi's client has no reset on the wire (``reset()`` is local): reconnect if the connection is gone."""
        if mode != "direct":
            raise PolicyFault(f"mode {mode!r} not served over openpi's protocol; valid: direct")
        if self._ws is not None and self._ws.protocol.state.name != "OPEN":
            self.close()
        self._ensure_connected()
        self._instruction = instruction

    def infer(self, request: dict) -> tuple[dict, float]:
        """One round trip: (the decoded reply, milliseconds)."""
        if self._ws is None:
            raise PolicyUnavailable(f"connection to policy server {self.server} lost mid-episode")
        try:
            started = time.perf_counter()
            self._ws.send(self._packer.pack(request))
            frame = self._ws.recv(timeout=self.timeout_s)
            elapsed = (time.perf_counter() - started) * 1000
        except TimeoutError:
            self.close()
            raise PolicyUnavailable(f"policy server {self.server} gave no reply within {self.timeout_s:g} s") from None
        except (ConnectionClosed, OSError) as exc:
            self.close()
            raise PolicyUnavailable(f"policy server {self.server} closed the connection ({type(exc).__name__})") from None
        if isinstance(frame, str):  # openpi's servers send the traceback as a text frame, then close
            self.close()
            lines = [line for line in frame.strip().splitlines() if line.strip()]
            raise ServerError(f"openpi server error: {lines[-1].strip() if lines else 'no detail'}")
        try:
            reply = msgpack_numpy.unpackb(frame)
        except Exception as exc:
            raise MalformedResponse(f"undecodable reply ({first_line(exc)})") from None
        if not isinstance(reply, dict):
            raise MalformedResponse(f"reply is a {type(reply).__name__}, not a map")
        return reply, elapsed

    def act(self, obs: Observation) -> Decision:
        if self._instruction is None:
            raise PolicyFault("act before reset")
        mapping = mapping_for(obs)
        replan_steps = mapping.replan_steps if self.replan_steps is None else self.replan_steps
        reply, elapsed = self.infer(mapping.build(obs))
        actions = check_actions(reply, mapping.action_dim, replan_steps)
        timing = {k: v for k, v in (reply.get("server_timing") or {}).items() if isinstance(v, (int, float))} if isinstance(reply.get("server_timing"), dict) else {}
        return Decision(actions=actions[:replan_steps], info={"server_timing": {**timing, "round_trip_ms": elapsed}, "chunk": int(len(actions))})


def check_actions(reply: dict, action_dim: int, replan_steps: int) -> np.ndarray:
    """The reply's ``actions``: a finite float (chunk, action_dim) array with at least ``replan_steps`` rows
    (openpi's LIBERO client asserts the same), or MalformedResponse naming the problem."""
    if "actions" not in reply:
        raise MalformedResponse(f"reply has no 'actions' (keys: {', '.join(map(str, reply)) or 'none'})")
    actions = check_chunk(reply["actions"], action_dim)
    if len(actions) < replan_steps:
        raise MalformedResponse(f"field 'actions' has {len(actions)} actions; replan_steps needs at least {replan_steps}")
    return actions
