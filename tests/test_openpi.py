"""openpi's websocket protocol (docs/remote-policy.md, "openpi's protocol"): the codec against openpi-client's own,
the LIBERO mapping against openpi's example client, `stress serve --wire openpi` driven by openpi's own
WebsocketClientPolicy, `--policy openpi` runs against it, and every failure outcome (exit 2 before a run,
an episode error during one)."""

from __future__ import annotations

import hashlib
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from openpi_client import image_tools, msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from conftest import run_cli, start_server
from stress.core.policy import Observation
from stress.policies.client import MalformedResponse, ServerError
from stress.policies.openpi import OpenpiPolicy, libero_request, quat2axisangle
from stress.policies.serve import PolicyServer, axisangle2quat, describe, openpi_pack, openpi_unpack
from stress.store import RunStore
from test_cli_errors import assert_user_error

PROMPT = "pick up the black bowl between the plate and the ramekin and place it on the plate"


def openpi_observation(rng=np.random.default_rng(0)) -> dict:
    return {"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
            "observation/state": rng.normal(size=8), "prompt": PROMPT}


# --- codec: ours is openpi-client's, byte for byte --------------------------------------------------------------
@pytest.mark.parametrize("value", [np.arange(12, dtype=np.uint8).reshape(2, 2, 3), np.linspace(-1, 1, 8), np.ones((10, 7), np.float32),
                                   np.arange(3, dtype=np.int64), np.array([True, False]), np.float32(0.25), np.int64(7)])
def test_openpi_codec_matches_openpi_client(value):
    message = {"x": value, "prompt": PROMPT, "nested": {"y": value}}
    assert openpi_pack(message) == msgpack_numpy.packb(message)  # numpy 2 on both sides
    for out in (openpi_unpack(msgpack_numpy.packb(message)), msgpack_numpy.unpackb(openpi_pack(message))):
        assert np.asarray(out["x"]).dtype == np.asarray(value).dtype and np.array_equal(out["x"], value) and out["prompt"] == PROMPT
    with pytest.raises(ValueError, match="does not match"):  # a lying header is refused, not read past its buffer
        openpi_unpack(msgpack_numpy.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f8", b"shape": [4]}))


# --- the LIBERO mapping: openpi's examples/libero/main.py ------------------------------------------------------
def test_libero_request_is_openpis_example_client():
    rng = np.random.default_rng(1)
    raw = {cam: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for cam in ("agentview", "wrist")}  # MuJoCo's render
    quat = np.array([0.6, -0.2, 0.1, 0.3]) / np.linalg.norm([0.6, -0.2, 0.1, 0.3])
    pos, gripper = np.array([0.1, -0.2, 1.05]), np.array([0.02, -0.02])
    obs = Observation(images={cam: np.ascontiguousarray(img[::-1]) for cam, img in raw.items()},  # ours: upright (flipud)
                      proprio=np.concatenate([gripper, pos, quat]), instruction=PROMPT, step=10)
    request = libero_request(obs)
    # what openpi's client computes from the raw LIBERO observation
    assert np.array_equal(request["observation/image"], image_tools.convert_to_uint8(image_tools.resize_with_pad(np.ascontiguousarray(raw["agentview"][::-1, ::-1]), 224, 224)))
    assert np.array_equal(request["observation/wrist_image"], image_tools.convert_to_uint8(image_tools.resize_with_pad(np.ascontiguousarray(raw["wrist"][::-1, ::-1]), 224, 224)))
    assert request["observation/image"].shape == (224, 224, 3) and request["prompt"] == PROMPT
    angle = 2 * np.arccos(quat[3])
    assert np.allclose(request["observation/state"], np.concatenate([pos, quat[:3] / np.sin(angle / 2) * angle, gripper]))
    assert np.allclose(axisangle2quat(quat2axisangle(quat)), quat)  # the server's inverse
    assert np.array_equal(quat2axisangle(np.array([0, 0, 0, 1.0])), np.zeros(3))


# --- `stress serve --wire openpi` of the built-in model, driven by openpi's own client ----------------------------
@pytest.fixture(scope="module")
def served_openpi():
    proc, url = start_server("--wire", "openpi")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_openpis_client_drives_stress_serve(served_openpi):
    import urllib.request

    host, port = served_openpi.removeprefix("ws://").split(":")
    client = WebsocketClientPolicy(host, int(port))
    metadata = client.get_server_metadata()
    assert metadata["protocol"] == "openpi" and metadata["policy"]["name"] == "reference"
    obs = openpi_observation()
    first, again = client.infer(obs), WebsocketClientPolicy(host, int(port)).infer(obs)
    assert first["actions"].shape == (16, 7) and np.isfinite(first["actions"]).all() and "infer_ms" in first["server_timing"]
    assert np.array_equal(first["actions"], again["actions"])  # a fresh connection is a fresh episode with the server's seed
    with pytest.raises(RuntimeError, match="observation misses"):  # openpi's error: a traceback text frame, then closed
        client.infer({"prompt": PROMPT})
    assert urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10).read() == b"OK\n"


def test_run_with_policy_openpi_and_resume(served_openpi, tmp_path):
    proc = run_cli("run", "--policy", "openpi", "--policy-server", served_openpi, "--episodes", "1", "--max-steps", "12",
                   "--replan-steps", "4", "--out", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = next(tmp_path.iterdir())
    rows = RunStore.open(run).query("SELECT error, steps, decisions FROM episodes")
    assert "not provided by this policy (actions only): planning vs direct; value over-estimation; world model vs copy-frame; selection regret" in proc.stdout, proc.stdout
    assert len(rows) == 1 and rows[0]["error"] is None and rows[0]["steps"] == 12 and rows[0]["decisions"] == 3, rows  # 4 actions of each chunk
    again = run_cli("run", "--resume", str(run), timeout=600)
    assert again.returncode == 0 and "1 already stored" in again.stderr, again.stderr


# --- failures -----------------------------------------------------------------------------------------------------
class ReplyPolicy:
    """A served policy whose decisions are given (a misbehaving peer: the failures the client must name)."""

    name, modes, uses_images = "stub", ("direct",), True

    def __init__(self, actions=None, error=None):
        self.actions, self.error, self.calls = actions, error, 0

    def reset(self, *args, **kwargs):
        pass

    def act(self, obs):
        self.calls += 1
        if self.error:
            raise self.error
        return SimpleNamespace(actions=self.actions, predicted_value=None, predicted_future=None)


def serve_thread(policy, wire="openpi", **kw) -> tuple[PolicyServer, str]:
    server = PolicyServer(lambda: policy, describe(policy, version="1", chunk=8, image_size=128), port=0, wire=wire, **kw)
    ready = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"ready": lambda port: ready.set()}, daemon=True).start()
    assert ready.wait(10)
    return server, f"ws://127.0.0.1:{server.port}"


def libero_obs() -> Observation:
    rng = np.random.default_rng(2)
    return Observation(images={c: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                       proprio=np.array([0.02, -0.02, 0.1, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]), instruction=PROMPT, step=10)


@pytest.mark.parametrize("actions, error", [
    (np.full((8, 7), np.nan), "NaN"),
    (np.zeros((8, 6)), "shape (8, 6); expected (chunk, 7)"),
    (np.zeros((3, 7)), "3 actions; replan_steps needs at least 5"),
])
def test_bad_actions_are_malformed_responses(actions, error):
    server, url = serve_thread(ReplyPolicy(actions))
    try:
        policy = OpenpiPolicy(server=url)
        policy.reset(PROMPT, 0)
        with pytest.raises(MalformedResponse, match=re.escape(error)):
            policy.act(libero_obs())
        policy.close()
    finally:
        server.shutdown()


def test_server_crash_is_a_server_error_with_its_last_traceback_line():
    server, url = serve_thread(ReplyPolicy(error=ZeroDivisionError("division by zero")))
    try:
        policy = OpenpiPolicy(server=url)
        policy.reset(PROMPT, 0)
        with pytest.raises(ServerError, match="ZeroDivisionError: division by zero"):
            policy.act(libero_obs())
        ok = OpenpiPolicy(server=url, replan_steps=5)
        assert ok.modes == ("direct",)
    finally:
        server.shutdown()


def test_wrong_protocol_exits_2_naming_it(served_openpi):
    stress_server, stress_url = serve_thread(ReplyPolicy(np.zeros((8, 7))), wire="stress")
    try:
        assert_user_error(run_cli("run", "--policy", "openpi", "--policy-server", stress_url, "--episodes", "1", timeout=120),
                          "speaks stress-policy/1, not openpi's protocol", "--policy remote")
    finally:
        stress_server.shutdown()
    assert_user_error(run_cli("run", "--policy", "remote", "--policy-server", served_openpi, "--episodes", "1", timeout=120),
                      "protocol 'openpi'", "--policy openpi")
    assert_user_error(run_cli("run", "--policy", "reference", "--replan-steps", "3", timeout=120), "--replan-steps is for --policy openpi")
    assert_user_error(run_cli("run", "--policy", "openpi", timeout=120), "needs --policy-server")


# --- security of `stress serve`: exposure needs a key, the key in constant time, frames bounded -------------------
def test_binding_beyond_loopback_needs_a_key():
    assert_user_error(run_cli("serve", "--host", "0.0.0.0", "--port", "0", timeout=120), "binding 0.0.0.0", "--api-key")


@pytest.mark.parametrize("wire", ["openpi", "stress"])
def test_a_request_without_the_key_never_reaches_the_policy(wire, monkeypatch):
    from websockets.exceptions import InvalidStatus

    from stress.policies.remote import RemotePolicy

    policy = ReplyPolicy(np.zeros((8, 7)))
    server, url = serve_thread(policy, wire=wire, api_key="s3cret")
    host, port = url.removeprefix("ws://").split(":")
    try:
        for key in (None, "wrong", "s3cre"):
            with pytest.raises(InvalidStatus, match="401"):
                WebsocketClientPolicy(host, int(port), api_key=key)
        assert policy.calls == 0
        if wire == "openpi":
            assert WebsocketClientPolicy(host, int(port), api_key="s3cret").infer(openpi_observation())["actions"].shape == (8, 7)
        else:
            monkeypatch.setenv("STRESS_POLICY_API_KEY", "s3cret")
            client = RemotePolicy(server=url)
            client.reset(PROMPT, 0)
            assert client.act(libero_obs()).actions.shape == (8, 7)
            client.close()
        assert policy.calls == 1
    finally:
        server.shutdown()


def test_an_oversized_frame_is_refused_from_its_header():
    """A client announces a 600 MB frame and sends 1 KB of it: the server closes with 1009 at once, without
    waiting for (or buffering) the rest."""
    import base64
    import os
    import socket
    import struct

    policy = ReplyPolicy(np.zeros((8, 7)))
    server, url = serve_thread(policy, wire="stress")
    try:
        assert server.max_frame == 1_650_688  # 2 cameras x 224 px x 224 px x 3 bytes, twice, plus 1 MiB (docs/remote-policy.md)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 101")
        length = 600 * 2**20
        sock.sendall(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", length) + b"mask" + b"\0" * 1024)  # binary, masked, 600 MB announced
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        sock.close()
        close = data.rfind(b"\x88")  # the close frame after the metadata: code 1009 (message too big)
        assert close >= 0 and struct.unpack("!H", data[close + 2:close + 4])[0] == 1009, data[-40:]
        assert policy.calls == 0
    finally:
        server.shutdown()


def test_an_undecodable_request_is_a_bad_request_naming_it():
    from websockets.sync.client import connect

    from stress.policies.serve import unpack

    server, url = serve_thread(ReplyPolicy(np.zeros((8, 7))), wire="stress")
    try:
        with connect(url) as ws:
            ws.recv()
            for frame, fragment in (("hello", "text frame"), (b"\xc1", "undecodable request")):
                ws.send(frame)
                reply = unpack(ws.recv(timeout=10))
                assert reply["kind"] == "bad_request" and fragment in reply["message"], reply
    finally:
        server.shutdown()


def test_the_client_refuses_an_oversized_reply_unread():
    from stress.policies.remote import HANDSHAKE_BYTES, RemotePolicy

    server, url = serve_thread(ReplyPolicy(np.zeros((HANDSHAKE_BYTES // 56 + 1000, 7))), wire="stress")  # > 16 MiB of actions
    try:
        client = RemotePolicy(server=url)
        client.reset(PROMPT, 0)
        with pytest.raises(MalformedResponse, match="reply larger than"):
            client.act(libero_obs())
    finally:
        server.shutdown()


def test_bench_wires_reports_each_wire():
    from stress.bench.remote import wires

    result = wires(repeats=20)  # figures are docs/benchmarks.md's, never asserted
    assert {"stress-policy/1 (remote backend)", "openpi (openpi-client's infer)", "openpi (openpi backend, 256 px renders resized to 224)",
            "deploy.py (cosmos-deploy backend, three 256 px renders resized to 224)"} <= set(result)


# --- parity: the suite's episode is the episode openpi's own client loop produces on the same LIBERO scene ----------
class ImageDrivenPolicy:
    """Served over --wire openpi: records what reaches it and answers a 10 x 7 chunk that depends on every pixel
    (a different byte anywhere changes the trajectory). Its actions ignore the state: the state's float32
    rounding (docs/remote-policy.md, a deliberate difference) is compared on its own."""

    name, modes, uses_images = "image-driven", ("direct",), True

    def __init__(self):
        self.seen = []

    def reset(self, *args, **kwargs):
        pass

    def act(self, obs):
        import hashlib

        digest = hashlib.sha256(obs.images["agentview"].tobytes() + obs.images["wrist"].tobytes()).hexdigest()
        self.seen.append((digest, np.array(obs.proprio)))
        code = np.resize(np.frombuffer(bytes.fromhex(digest), dtype=np.uint8), 70).astype(np.float64).reshape(10, 7)
        actions = (code / 255 - 0.5) * 0.6
        actions[:, 6] = -1.0
        return SimpleNamespace(actions=actions, predicted_value=None, predicted_future=None)


def test_parity_with_openpis_own_client_loop():
    from stress.core.spec import ScenarioSpec
    from stress.envs.cache import EnvCache
    from stress.envs.libero import LiberoEnv
    from stress.policies.cache import PolicyCache
    from stress.runners.episode import run_episode

    recorder = ImageDrivenPolicy()
    server = PolicyServer(lambda: recorder, describe(recorder, version="1", chunk=10, image_size=128), port=0, wire="openpi")
    ready = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"ready": lambda port: ready.set()}, daemon=True).start()
    assert ready.wait(10)
    url, steps = f"ws://127.0.0.1:{server.port}", 20
    envs = EnvCache()
    try:
        # the suite's episode
        spec = ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0, policy="openpi", mode="direct", seed=0, max_steps=steps,
                            image_size=256, policy_options=(("replan_steps", 5), ("server", url)))
        result = run_episode(spec, envs, PolicyCache())
        assert result.error is None and result.steps == steps, result.error
        ours, recorder.seen = recorder.seen, []
        # openpi's examples/libero/main.py loop, on the suite's LIBERO adapter (its reset runs the 10 settle steps)
        env = LiberoEnv("libero_spatial", 0, image_size=256)
        env.reset(0)
        client = WebsocketClientPolicy("127.0.0.1", server.port)
        plan = []
        for _ in range(steps):
            if not plan:
                raw = env.raw._get_observations()
                img = np.ascontiguousarray(env._render_raw("agentview")[::-1, ::-1])  # LIBERO's obs["agentview_image"], rotated
                wrist = np.ascontiguousarray(env._render_raw("wrist")[::-1, ::-1])
                chunk = client.infer({
                    "observation/image": image_tools.convert_to_uint8(image_tools.resize_with_pad(img, 224, 224)),
                    "observation/wrist_image": image_tools.convert_to_uint8(image_tools.resize_with_pad(wrist, 224, 224)),
                    "observation/state": np.concatenate((raw["robot0_eef_pos"], quat2axisangle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"])),
                    "prompt": env.instruction})["actions"]
                plan.extend(chunk[:5])
            env.step(plan.pop(0))
        env.close()
        theirs = recorder.seen
    finally:
        envs.close()
        server.shutdown()
    assert len(ours) == len(theirs) == steps // 5
    assert [d for d, _ in ours] == [d for d, _ in theirs]  # the same image bytes at every decision: the same episode
    for (_, a), (_, b) in zip(ours, theirs):  # the state: equal up to the suite's float32 proprio (documented)
        assert np.allclose(a, b, atol=1e-6)


# --- the ALOHA mapping: openpi's examples/aloha_sim ------------------------------------------------------------
def test_aloha_request_is_openpis_example_client():
    from stress.policies.openpi import MAPPINGS, aloha_request

    rng = np.random.default_rng(3)
    top = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # gym-aloha's pixels["top"]: upright, 480 x 640
    state = rng.normal(size=14)
    obs = Observation(images={"top": top, "left_wrist": top, "right_wrist": top}, proprio=state, instruction="ignored", step=0)
    request = aloha_request(obs)
    # what examples/aloha_sim/env.py's _convert_observation computes
    expected = np.transpose(image_tools.convert_to_uint8(image_tools.resize_with_pad(top, 224, 224)), (2, 0, 1))
    assert set(request) == {"state", "images"} and set(request["images"]) == {"cam_high"}  # no prompt: the server's default
    assert request["images"]["cam_high"].shape == (3, 224, 224) and np.array_equal(request["images"]["cam_high"], expected)
    assert request["state"].dtype == np.float64 and np.array_equal(request["state"], state)
    assert (MAPPINGS["aloha"].render_size, MAPPINGS["aloha"].replan_steps, MAPPINGS["aloha"].action_dim) == (480, 10, 14)


class AlohaRecorder:
    """A small openpi-protocol server (openpi-client's codec, websockets) for ALOHA: records what reaches it and
    answers a 50 x 14 chunk around a fixed pose that depends on every pixel of ``cam_high``."""

    def __init__(self, pose: np.ndarray):
        from websockets.sync.server import serve

        self.pose, self.seen = pose, []
        self.server = serve(self._handler, "127.0.0.1", 0, compression=None, max_size=None)
        self.port = self.server.socket.getsockname()[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self, ws):
        from websockets.exceptions import ConnectionClosed

        ws.send(msgpack_numpy.packb({"policy": "aloha-recorder"}))
        try:
            self._serve(ws)
        except ConnectionClosed:  # openpi's client never closes its connection: it just ends
            pass

    def _serve(self, ws):
        for frame in ws:
            request = msgpack_numpy.unpackb(frame)
            image = request["images"]["cam_high"]
            digest = hashlib.sha256(image.tobytes()).hexdigest()
            self.seen.append((digest, image.shape, image.dtype.str, sorted(request), np.array(request["state"])))
            code = np.resize(np.frombuffer(bytes.fromhex(digest), dtype=np.uint8), 50 * 14).astype(np.float64).reshape(50, 14)
            ws.send(msgpack_numpy.packb({"actions": self.pose + (code / 255 - 0.5) * 0.1, "server_timing": {"infer_ms": 0.0}}))


def test_aloha_parity_with_openpis_own_client_loop(tmp_path):
    """`stress run --suite aloha --policy openpi` against openpi's examples/aloha_sim loop (ActionChunkBroker with
    action_horizon 10 around WebsocketClientPolicy, the env's _convert_observation) on the suite's ALOHA adapter,
    same init state: the same image bytes reach the policy at every decision, so the same actions are executed."""
    from openpi_client.action_chunk_broker import ActionChunkBroker

    from stress.envs.aloha import AlohaEnv

    steps = 20
    env = AlohaEnv("aloha", 0, image_size=480)
    env.reset(0)
    recorder = AlohaRecorder(env.proprio().astype(np.float64))
    try:
        url = f"ws://127.0.0.1:{recorder.port}"
        proc = run_cli("run", "--suite", "aloha", "--policy", "openpi", "--policy-server", url, "--episodes", "1", "--max-steps", str(steps),
                       "--out", str(tmp_path), timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        store = RunStore.open(next(tmp_path.iterdir()))
        rows = store.query("SELECT episode_key, error, steps, decisions FROM episodes")
        assert len(rows) == 1 and rows[0]["error"] is None and (rows[0]["steps"], rows[0]["decisions"]) == (steps, 2), rows
        assert store.specs()[0].image_size == 480  # gym-aloha's own 480 x 640 camera, as openpi's client renders it
        assert dict(store.specs()[0].policy_options)["simulator"] == "aloha"  # so the episode rendered `top` alone:
        assert OpenpiPolicy(simulator="aloha").cameras == ("top",) and OpenpiPolicy().cameras is None
        ours_actions = np.asarray(store.actions(rows[0]["episode_key"])[0])
        (check, *ours), recorder.seen = recorder.seen, []  # the first request is the pre-run inference check
        assert check[:4] == ours[0][:4]  # which sends the episode's own first observation
        # openpi's own loop: an observation every step (gym-aloha's pixels["top"] and agent_pos), a query every 10
        broker = ActionChunkBroker(WebsocketClientPolicy("127.0.0.1", recorder.port), action_horizon=10)
        theirs_actions = []
        for _ in range(steps):
            img = image_tools.convert_to_uint8(image_tools.resize_with_pad(env.render("top"), 224, 224))
            action = broker.infer({"state": env._task.get_qpos(env.physics), "images": {"cam_high": np.transpose(img, (2, 0, 1))}})["actions"]
            theirs_actions.append(action)
            env.step(action)
        theirs = recorder.seen
    finally:
        env.close()
        recorder.server.shutdown()
    assert len(ours) == len(theirs) == steps // 10
    assert [s[:4] for s in ours] == [s[:4] for s in theirs]  # the same bytes, shape, dtype and fields at every decision
    assert ours[0][1:4] == ((3, 224, 224), "|u1", ["images", "state"])
    assert np.array_equal(ours_actions, np.asarray(theirs_actions))  # so the same actions were executed
    for a, b in zip(ours, theirs):  # the state: equal up to the suite's float32 proprio (documented)
        assert np.allclose(a[4], b[4], atol=1e-6)
