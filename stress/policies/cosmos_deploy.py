"""The ``cosmos-deploy`` policy backend: a client of Cosmos Policy's own ALOHA policy server, the unmodified
``cosmos_policy/experiments/robot/aloha/deploy.py`` (NVlabs/cosmos-policy 18a2acc): FastAPI + uvicorn, one
endpoint ``POST /act``, JSON bodies whose numpy arrays are encoded by ``json_numpy``.

The request is what Cosmos's ALOHA eval client (``run_aloha_eval.py``) sends, field for field: ``task_description``,
``primary_image`` (our ``top`` camera), ``left_wrist_image``, ``right_wrist_image`` (each rendered upright at 256 px,
the size ``aloha_utils.resize_image_for_preprocessing`` makes of a camera frame, then resized to 224 px with PIL's
bicubic filter, as its ``resize_images``), ``proprio`` (the 14 joint positions, gym-aloha's ``qpos`` layout) and
``return_all_query_results``. The reply is deploy.py's: ``actions`` (a list of chunk x 14 joint targets, executed
whole), ``value_prediction``, ``future_image_predictions`` (``future_image``, ``future_wrist_image``,
``future_wrist_image2``: 224 px, the model's centre-cropped view) and, asked with ``return_all_query_results``, every
best-of-N query's ``all_actions``, ``all_future_image_predictions``, ``all_value_predictions`` (the Decision's
candidates). A bare list is a server that returns actions only (Cosmos's eval client accepts that too); the string
``"error"`` is deploy.py's reply to a request it failed on (it logs the traceback on its own console).

deploy.py has no handshake, no reset and no per-request settings: the server's configuration decides direct or
best-of-N planning, N, the ensembles and the aggregation. So the client learns what is served from one real
request before a run (``probe``): the reply's shape (actions only, direct, or planning with N queries) and its
chunk length are the ``served`` option, in the episode key; ``stress run`` refuses a mode or ``--candidates``
the server does not run. Every field is documented in docs/remote-policy.md ("Cosmos Policy's deploy.py").
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import json_numpy
import numpy as np
from PIL import Image
from websockets.sync.client import connect as websocket_connect

from stress.core.errors import UserError
from stress.core.policy import (
    Candidate,
    Decision,
    Observation,
    PolicyFault,
    PolicyUnavailable,
)
from stress.policies.client import (
    HTTP,
    MalformedResponse,
    ServerError,
    check_chunk,
    check_url,
    first_line,
)

ENDPOINT = "/act"  # deploy.py: self.app.post("/act")
RENDER_SIZE = 256  # aloha_utils.resize_image_for_preprocessing: every camera frame is first made 256 x 256
INPUT_SIZE = 224  # run_aloha_eval.py: input_image_size, the size sent
ACTION_DIM = 14  # cosmos_utils.ACTION_DIM for ALOHA: per arm 6 joints and the gripper
CAMERAS = {"top": "primary_image", "left_wrist": "left_wrist_image", "right_wrist": "right_wrist_image"}  # ours -> request key
FUTURES = {"future_image": "top", "future_wrist_image": "left_wrist", "future_wrist_image2": "right_wrist"}  # reply key -> ours
FUTURE_VIEW = "cosmos-nojpeg"  # the model's view (resize to 224, 90 % centre crop, 224): ALOHA's use_jpeg_compression is False
DEFAULT_TIMEOUT_S = 300.0  # per request: best-of-8 with ensembles on one GPU takes tens of seconds
PROBE_TIMEOUT_S = 300.0


def check_server_url(url) -> str:
    """An http(s)://HOST:PORT URL (a path, if any, must be deploy.py's /act), or UserError."""
    check_url(url, HTTP)
    if urlsplit(url).path.rstrip("/") not in ("", ENDPOINT):
        raise UserError(f"policy server URL {url!r} has path {urlsplit(url).path!r}; valid: http://HOST:PORT (deploy.py serves {ENDPOINT})")
    return url


def endpoint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{ENDPOINT}"


# --- the request: run_aloha_eval.prepare_observation, field for field -------------------------------------------
def resize(image: np.ndarray) -> np.ndarray:
    """run_aloha_eval.resize_images for one image: PIL's resize to 224 x 224 (its default filter, bicubic);
    an image already 224 px is sent as it is, as there."""
    if image.shape[0] == image.shape[1] == INPUT_SIZE:
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC))


def deploy_request(obs: Observation, return_all: bool) -> dict:
    """The JSON body deploy.py's ``get_server_action`` reads. Our images are upright (deploy.py's ALOHA
    ``flip_images`` is False: the real cameras' frames are upright too)."""
    missing = [c for c in CAMERAS if c not in obs.images]
    if missing:
        raise PolicyFault(f"cosmos-deploy needs cameras {', '.join(CAMERAS)}; the observation lacks {', '.join(missing)}")
    request: dict[str, Any] = {key: resize(obs.images[camera]) for camera, key in CAMERAS.items()}
    request["proprio"] = np.asarray(obs.proprio, dtype=np.float64)  # deploy.py casts to float32 itself
    request["task_description"] = str(obs.instruction)
    request["return_all_query_results"] = bool(return_all)
    return request


def encode(request: dict) -> bytes:
    """As ``requests.post(json=...)`` sends it with json_numpy patched in: arrays as json_numpy objects."""
    return json_numpy.dumps(request).encode()


# --- the reply ---------------------------------------------------------------------------------------------------
@dataclass
class Reply:
    actions: np.ndarray
    value: float | None = None
    future: dict[str, np.ndarray] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    kind: str = "actions"  # "actions" (a bare list), "direct" (one query), "planning" (N > 1 queries)


def decode(body: bytes) -> Any:
    """A reply body: JSON with json_numpy arrays; deploy.py's double-encoded form (a JSON string holding the JSON,
    its answer to an ``encoded`` request) is decoded once more. The string "error" is deploy.py's failure reply."""
    try:
        reply = json_numpy.loads(body)
    except (ValueError, TypeError) as exc:
        raise MalformedResponse(f"reply is not JSON ({first_line(exc)}); expected deploy.py's JSON") from None
    if reply == "error":
        raise ServerError("deploy.py answered 'error' (it failed on the request; the traceback is on the server's console)")
    if isinstance(reply, str):
        try:
            reply = json_numpy.loads(reply)
        except (ValueError, TypeError):
            raise MalformedResponse(f"reply is the string {reply[:60]!r}; expected deploy.py's actions") from None
    return reply


def _chunk(value, name: str) -> np.ndarray:
    """deploy.py's action chunk: a list of per-step arrays (or one array), checked as (chunk, 14)."""
    if isinstance(value, list):
        try:
            value = np.stack([np.asarray(a) for a in value]) if value else np.zeros((0, ACTION_DIM))
        except ValueError:
            raise MalformedResponse(f"field {name!r} is a ragged list; expected (chunk, {ACTION_DIM})") from None
    return check_chunk(value, ACTION_DIM, name)


def _value(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise MalformedResponse(f"field {name!r} is {value!r}; expected a finite number")
    return float(value)


def _futures(value, name: str) -> dict[str, np.ndarray] | None:
    """deploy.py's future_image_predictions as our cameras' images; None when the server predicts none (Q-value)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedResponse(f"field {name!r} is a {type(value).__name__}; expected a map of {', '.join(FUTURES)}")
    out = {}
    for key, camera in FUTURES.items():
        image = value.get(key)
        if image is None:
            continue
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise MalformedResponse(f"field '{name}.{key}' is {what}; expected a uint8 (H, W, 3) image")
        out[camera] = np.array(image)
    return out or None


def parse_reply(reply: Any) -> Reply:
    """deploy.py's reply as a Reply, every field checked (MalformedResponse names the first bad one and what was
    expected). The executed query is the one whose actions equal ``actions`` (deploy.py's best-of-N: the base
    seed's unless another has a strictly higher value)."""
    if isinstance(reply, list):
        return Reply(actions=_chunk(reply, "actions"))
    if not isinstance(reply, dict):
        raise MalformedResponse(f"reply is a {type(reply).__name__}; expected deploy.py's map or list of actions")
    if "actions" not in reply:
        raise MalformedResponse(f"reply has no 'actions' (keys: {', '.join(map(str, reply)) or 'none'}); expected deploy.py's reply")
    parsed = Reply(actions=_chunk(reply["actions"], "actions"), value=_value(reply.get("value_prediction"), "value_prediction"),
                   future=_futures(reply.get("future_image_predictions"), "future_image_predictions"), kind="direct")
    if "all_actions" not in reply:
        return parsed
    every = [reply.get(k) for k in ("all_actions", "all_value_predictions", "all_future_image_predictions")]
    if not all(isinstance(v, list) for v in every) or len({len(v) for v in every}) != 1 or not every[0]:
        raise MalformedResponse("fields 'all_actions', 'all_value_predictions', 'all_future_image_predictions' are not lists of one length >= 1")
    for i, (actions, value, future) in enumerate(zip(*every)):
        parsed.candidates.append(Candidate(actions=_chunk(actions, f"all_actions[{i}]"), predicted_value=_value(value, f"all_value_predictions[{i}]"),
                                           predicted_future=_futures(future, f"all_future_image_predictions[{i}]"), seed=None))
    matches = [i for i, c in enumerate(parsed.candidates) if c.actions.shape == parsed.actions.shape and np.array_equal(c.actions, parsed.actions)]
    if not matches:
        raise MalformedResponse("field 'actions' is none of 'all_actions'; expected the executed query among them")
    parsed.chosen = matches[0]
    parsed.kind = "planning" if len(parsed.candidates) > 1 else "direct"
    if parsed.kind == "direct":  # best-of-1: the one query is the decision itself
        parsed.candidates, parsed.chosen = [], None
    return parsed


# --- the wire ----------------------------------------------------------------------------------------------------
def post(url: str, body: bytes, timeout: float) -> tuple[Any, float]:
    """One POST to deploy.py's /act: (the decoded reply, milliseconds). PolicyUnavailable if unreachable or
    silent; MalformedResponse naming the protocol when something other than deploy.py answers."""
    request = urllib.request.Request(endpoint(url), data=body, headers={"Content-Type": "application/json"}, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 426:  # websockets' answer to a plain HTTP request
            raise MalformedResponse(f"policy server {url} answered HTTP 426 Upgrade Required: it speaks websocket, not deploy.py's HTTP "
                                    f"(use --policy remote or openpi with ws://)") from None
        detail = exc.read(300).decode(errors="replace").strip().splitlines()
        raise ServerError(f"policy server {url} answered HTTP {exc.code} {exc.reason} to POST {ENDPOINT}"
                          + (f" ({detail[0][:120]})" if detail else "") + "; expected deploy.py's 200 with JSON") from None
    except TimeoutError:
        raise PolicyUnavailable(f"policy server {url} gave no reply within {timeout:g} s") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            raise PolicyUnavailable(f"policy server {url} gave no reply within {timeout:g} s") from None
        raise PolicyUnavailable(f"policy server {url} unreachable ({first_line(reason) if isinstance(reason, BaseException) else reason})") from None
    except Exception as exc:  # http.client's BadStatusLine and kin: not an HTTP server at all
        raise MalformedResponse(f"policy server {url} did not answer HTTP ({first_line(exc)}); expected deploy.py") from None
    return decode(payload), (time.perf_counter() - started) * 1000


def served_id(reply: Reply) -> str:
    """What a deploy.py server serves, as its reply shows it (deploy.py names no model): the kind, N, the chunk
    and what it predicts. In the episode key: a run never mixes two servers' configurations."""
    kind = f"planning{len(reply.candidates)}" if reply.kind == "planning" else reply.kind
    predicts = [name for name, present in (("value", reply.value is not None), ("future", reply.future is not None)) if present]
    return f"deploy.py:{kind}:chunk{len(reply.actions)}" + (":" + "+".join(predicts) if predicts else "")


def describe(reply: Reply) -> dict:
    """A probe reply as the run's record of its server: served id, modes, N, chunk, predictions."""
    return {"wire": "cosmos-deploy", "served": served_id(reply), "modes": ["planning" if reply.kind == "planning" else "direct"],
            "candidates": max(1, len(reply.candidates)), "chunk": len(reply.actions),
            "predictions": [name for name, present in (("value", reply.value is not None), ("future_images", reply.future is not None),
                                                       ("candidates", bool(reply.candidates))) if present]}


_probed: dict[tuple[str, bytes], tuple[dict, Reply, float]] = {}  # (url, request digest) -> (description, reply, ms)


def speaks_websocket(url: str) -> bool:
    """Does a websocket handshake succeed at ``url``'s host and port (a websocket policy server, not deploy.py)?"""
    parts = urlsplit(url)
    try:
        with websocket_connect(f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}", open_timeout=5, close_timeout=1):
            return True
    except Exception:
        return False


def probe(url: str, obs: Observation, timeout: float = PROBE_TIMEOUT_S) -> dict:
    """The server's description (``describe``) from one real request (``return_all_query_results`` on) with the first
    scenario's observation, or UserError naming what is wrong (before a run). The request is sent once per server
    and observation: the pre-run inference check reads the same reply (``CosmosDeployPolicy.first_decision``)."""
    return _probe_reply(url, obs, timeout)[0]


def _probe_reply(url: str, obs: Observation, timeout: float) -> tuple[dict, Reply, float]:
    check_server_url(url)
    body = encode(deploy_request(obs, return_all=True))
    key = (url, hashlib.sha256(body).digest())
    if key in _probed:
        return _probed[key]
    try:
        raw, elapsed = post(url, body, timeout)
        reply = parse_reply(raw)
    except PolicyUnavailable as exc:
        if speaks_websocket(url):  # websockets drops a plain POST without an answer
            raise UserError(f"policy server {url} speaks websocket, not deploy.py's HTTP; valid: --policy remote or openpi with ws://HOST:PORT, "
                            f"or an http:// address of deploy.py") from None
        raise UserError(f"policy server {url} failed the inference check ({exc.kind}: {exc})") from None
    except PolicyFault as exc:
        raise UserError(f"policy server {url} failed the inference check ({exc.kind}: {exc})") from None
    _probed[key] = (describe(reply), reply, elapsed)
    return _probed[key]


def check_served(metadata: dict, url: str, mode: str, n_candidates: int, served: str | None) -> None:
    """Does a probed deploy.py server run what an episode asks? UserError naming the mismatch."""
    if served is not None and metadata["served"] != served:
        raise UserError(f"policy server {url} serves {metadata['served']!r}; the run was started with {served!r}")
    if mode not in metadata["modes"]:
        raise UserError(f"policy server {url} runs {metadata['modes'][0]} (deploy.py's num_queries_best_of_n {metadata['candidates']}); "
                        f"--mode {mode} is not served; valid: --mode {metadata['modes'][0]}")
    if mode == "planning" and n_candidates != metadata["candidates"]:
        raise UserError(f"policy server {url} runs best-of-{metadata['candidates']} (deploy.py's num_queries_best_of_n); "
                        f"--candidates {n_candidates} is not served; valid: --candidates {metadata['candidates']}")


# --- the backend -------------------------------------------------------------------------------------------------
class CosmosDeployPolicy:
    """Client of Cosmos Policy's deploy.py; honours the policy protocol (``stress.core.policy``)."""

    name: ClassVar[str] = "cosmos-deploy"
    modes: ClassVar[tuple[str, ...]] = ("direct", "planning")  # the server's configuration decides; the probe says which
    simulators: ClassVar[tuple[str, ...]] = ("aloha",)  # deploy.py is Cosmos Policy's ALOHA server
    uses_images: ClassVar[bool] = True

    def __init__(self, server: str | None = None, served: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.server, self.served, self.timeout_s = server, served, float(timeout_s)
        self._mode: str | None = None
        self._n = 1
        self._aggregation: str | None = None

    @classmethod
    def check_options(cls, options: dict) -> None:
        check_server_url(options.get("server"))
        timeout = options.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise UserError(f"timeout_s {timeout!r} invalid; valid: seconds > 0")

    @staticmethod
    def actions_only_for(options: dict) -> bool:
        """A server whose probe reply was a bare list of actions: no value, no future (the report says so)."""
        return str(options.get("served", "")).startswith("deploy.py:actions")

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        """deploy.py has no episode on the wire (no reset, its seed is its own ``cfg.seed``): local state only."""
        if mode not in self.modes:
            raise PolicyFault(f"mode {mode!r} not served by deploy.py; valid: {', '.join(self.modes)}")
        self._mode, self._n, self._aggregation = mode, n_candidates, aggregation

    def close(self) -> None:
        pass  # one HTTP request per decision: no connection is held

    def act(self, obs: Observation) -> Decision:
        if self._mode is None:
            raise PolicyFault("act before reset")
        raw, elapsed = post(check_server_url(self.server), encode(deploy_request(obs, return_all=self._mode == "planning")), self.timeout_s)
        return self._decision(parse_reply(raw), elapsed)

    def first_decision(self, obs: Observation) -> Decision:
        """The decision of the pre-run inference check: the probe's reply for this observation (one request for both
        checks; sent now if the server was not probed with it). The probe asks for every query's results, which a
        direct episode ignores."""
        if self._mode is None:
            raise PolicyFault("act before reset")
        _, reply, elapsed = _probe_reply(check_server_url(self.server), obs, PROBE_TIMEOUT_S)
        return self._decision(reply, elapsed)

    def _decision(self, reply: Reply, elapsed: float) -> Decision:
        planning = self._mode == "planning"
        if planning and len(reply.candidates) != self._n:
            raise MalformedResponse(f"reply has {len(reply.candidates)} queries in 'all_actions'; the episode asked for best-of-{self._n}")
        info = {"server_timing": {"round_trip_ms": elapsed}, "chunk": len(reply.actions), "reply": reply.kind}
        if reply.future is not None or any(c.predicted_future for c in reply.candidates):
            info["future_view"] = FUTURE_VIEW
        return Decision(actions=reply.actions, predicted_value=reply.value, predicted_future=reply.future, candidates=reply.candidates if planning else [],
                        chosen=reply.chosen if planning else None, aggregation=self._aggregation if planning else None, info=info)
