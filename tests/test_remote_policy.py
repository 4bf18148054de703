"""Remote policies (docs/remote-policy.md): the wire codec, the built-in model served over a real socket on
127.0.0.1 against the in-process one (bit-identical episodes), and every failure outcome of the issue:
unreachable or incompatible server (exit 2), server gone or silent mid-run (episode error, --resume finishes
it), malformed replies (episode error naming the field)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import run_cli, start_server
from stress.core.spec import ScenarioSpec
from stress.policies.serve import PolicyServer, describe, pack, unpack
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode
from test_cli_errors import assert_user_error


# --- codec ----------------------------------------------------------------------------------------------
def test_codec_round_trips_raw_arrays_and_refuses_objects():
    message = {"images": {"agentview": np.arange(256 * 256 * 3, dtype=np.uint8).reshape(256, 256, 3)},
               "proprio": np.linspace(-1, 1, 9), "ints": np.arange(3, dtype=np.int32), "flag": np.bool_(True), "nested": [{"x": np.float32(0.5)}]}
    out = unpack(pack(message))
    assert np.array_equal(out["images"]["agentview"], message["images"]["agentview"]) and out["images"]["agentview"].dtype == np.uint8
    assert out["proprio"].dtype == np.float64 and np.array_equal(out["proprio"], message["proprio"])
    assert out["ints"].dtype == np.int32 and out["flag"] is True and out["nested"][0]["x"] == 0.5
    assert not out["proprio"].flags.writeable  # a view of the frame: the client copies before use
    with pytest.raises(TypeError, match="object"):
        pack({"bad": np.array([object()])})
    with pytest.raises(ValueError, match="does not match"):
        unpack(pack({"a": {"__ndarray__": True, "dtype": "<f8", "shape": [4], "data": b"\0" * 8}}))


# --- a real `stress serve` of the built-in model -----------------------------------------------------------
@pytest.fixture(scope="module")
def served_reference():
    proc, url = start_server()
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _spec(mode: str, policy: str = "reference", options: tuple = (), **kw) -> ScenarioSpec:
    planning = dict(n_candidates=2, aggregation="lcb") if mode == "planning" else {}
    return ScenarioSpec(suite="libero_spatial", task_id=0, init_index=kw.pop("init_index", 0), policy=policy, mode=mode, seed=3,
                        max_steps=kw.pop("max_steps", 32), policy_options=options, **planning, **kw)


def _comparable(result):
    rows = [{k: v for k, v in row.items() if k != "episode_key"} for row in result.decisions]
    return result.success, result.steps, result.error, result.decision_steps, rows


@pytest.mark.parametrize("mode", ["direct", "planning"])
def test_served_reference_gives_bit_identical_episodes(served_reference, mode):
    from stress.measurement.groundtruth import Measurement
    from stress.policies.remote import probe, served_id

    envs = EnvCache()
    served = served_id(probe(served_reference))
    local = run_episode(_spec(mode), envs, PolicyCache(), measurement=Measurement())
    remote = run_episode(_spec(mode, "remote", (("served", served), ("server", served_reference))), envs, PolicyCache(), measurement=Measurement())
    envs.close()
    assert local.error is None and remote.error is None, (local.error, remote.error)
    assert np.array_equal(local.actions, remote.actions)  # bit-identical executed actions
    assert _comparable(local) == _comparable(remote)  # success, steps, every decision row (values, futures' PSNR/SSIM)
    assert len(local.decisions) == (1 if mode == "direct" else 3) * 2


# --- fake servers for the failure outcomes (they honour the protocol; only their replies are broken) ---------
class FakePolicy:
    name, modes, uses_images = "fake", ("direct",), True

    def __init__(self, reply=None, delay: float = 0.0):
        self.reply, self.delay = reply, delay

    def reset(self, instruction, seed, mode="direct", n_candidates=1, aggregation=None):
        pass

    def act(self, obs):
        time.sleep(self.delay)
        decision = SimpleNamespace(actions=np.zeros((16, 7)), predicted_value=0.5, predicted_future=None, candidates=[], chosen=None, aggregation=None, info={})
        for field, value in (self.reply or {}).items():
            setattr(decision, field, value)
        return decision


def fake_metadata(**changes):
    metadata = describe(FakePolicy, version="1", chunk=16, image_size=128, aggregations=("average",))
    return {**metadata, **changes}


@pytest.fixture(scope="module")
def shared_envs():
    """One scene for the fault tests, closed at the end: an env left to the garbage collector frees its GL
    context at a random moment, which can unbind another env's context mid-render in a later test."""
    envs = EnvCache()
    yield envs
    envs.close()


@pytest.fixture
def fake_server():
    """Start PolicyServers in threads of this process (real sockets on 127.0.0.1); yields a starter."""
    servers = []

    def start(factory=FakePolicy, metadata=None, server_class=PolicyServer) -> str:
        server = server_class(factory, metadata or fake_metadata(), port=0)
        ready = threading.Event()
        threading.Thread(target=server.serve_forever, kwargs={"ready": lambda port: ready.set()}, daemon=True).start()
        assert ready.wait(10)
        servers.append(server)
        return f"ws://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.shutdown()


class DroppingServer(PolicyServer):
    """Answers the handshake and reset, then drops the connection at the first act: a server gone mid-run."""

    def _handler(self, ws):
        ws.send(pack(self.metadata))
        for frame in ws:
            if unpack(frame)["type"] != "reset":
                ws.close()
                return
            ws.send(pack({"type": "ready"}))


class DropsAfterTheCheck(DroppingServer):
    """Serves its first decision in full (``stress run``'s pre-run inference check), then behaves as DroppingServer."""

    answered = False

    def _handler(self, ws):
        if self.answered:
            return super()._handler(ws)
        server = self

        class Marking:  # the connection, noting when a decision went out
            def __iter__(self):
                return iter(ws)

            def send(self, data):
                ws.send(data)
                server.answered = server.answered or unpack(data).get("type") == "decision"

            def close(self, *args):
                ws.close(*args)

        return PolicyServer._handler(self, Marking())


@pytest.mark.parametrize("reply, field", [
    ({"actions": np.zeros((16, 6))}, "'actions' has shape (16, 6)"),
    ({"actions": np.zeros((8, 7))}, "'actions' has shape (8, 7)"),
    ({"predicted_value": float("nan")}, "'value' is nan"),
    ({"predicted_value": 1.5}, "'value' 1.5 outside [0, 1]"),
    ({"actions": np.full((16, 7), np.inf)}, "'actions' holds NaN"),
    ({"predicted_future": {"agentview": np.zeros((8, 8, 3), np.float32)}}, "'future.agentview' has dtype float32"),
])
def test_malformed_reply_is_an_episode_error_naming_the_field(fake_server, shared_envs, reply, field):
    url = fake_server(lambda: FakePolicy(reply))
    result = run_episode(_spec("direct", "remote", (("server", url),), max_steps=16), shared_envs, PolicyCache())
    assert result.error is not None and result.error.startswith("malformed_response: "), result.error
    assert field in result.error, result.error
    assert not result.success


def test_silent_or_vanished_server_is_a_transient_episode_error(fake_server, shared_envs):
    envs = shared_envs
    slow = fake_server(lambda: FakePolicy(delay=3.0))
    result = run_episode(_spec("direct", "remote", (("server", slow), ("timeout_s", 0.5)), max_steps=16), envs, PolicyCache())
    assert result.error.startswith("policy_unavailable: ") and "no reply within 0.5 s" in result.error, result.error
    gone = fake_server(server_class=DroppingServer)
    result = run_episode(_spec("direct", "remote", (("server", gone),), max_steps=16), envs, PolicyCache())
    assert result.error.startswith("policy_unavailable: ") and "closed the connection" in result.error, result.error


def test_server_errors_arrive_with_their_message(fake_server, shared_envs):
    def broken():
        policy = FakePolicy()
        policy.act = lambda obs: 1 / 0
        return policy

    result = run_episode(_spec("direct", "remote", (("server", fake_server(broken)),), max_steps=16), shared_envs, PolicyCache())
    assert result.error == "policy_server_error: policy_error: ZeroDivisionError: division by zero", result.error


def test_the_episode_renders_only_the_cameras_the_server_declares(fake_server, shared_envs):
    """A served policy that reads the wrist camera only (its handshake's ``cameras``): each decision renders that one."""
    seen = []

    class WristOnly(FakePolicy):
        def act(self, obs):
            seen.append(sorted(obs.images))
            return super().act(obs)

    spec = _spec("direct", "remote", (("server", fake_server(WristOnly, fake_metadata(cameras=["wrist"]))),), max_steps=32)
    env, rendered = shared_envs.get(spec), []
    render = env.render
    env.render = lambda camera: rendered.append(camera) or render(camera)
    try:
        result = run_episode(spec, shared_envs, PolicyCache())
    finally:
        del env.render
    assert result.error is None, result.error
    assert seen == [["wrist"], ["wrist"]] and rendered == ["wrist", "wrist"]  # two decisions, one render each


# --- the command line ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["run", "--policy", "remote"], ["needs --policy-server"]),
    (["run", "--policy", "remote", "--policy-server", "http://127.0.0.1:1"], ["'http://127.0.0.1:1'", "--policy cosmos-deploy", "ws://HOST:PORT"]),
    (["run", "--policy", "remote", "--policy-server", "ws://127.0.0.1:port"], ["malformed", "ws://HOST:PORT"]),
    (["run", "--policy", "remote", "--policy-server", "ws://127.0.0.1:1"], ["ws://127.0.0.1:1 unreachable"]),
    (["run", "--policy", "reference", "--policy-server", "ws://127.0.0.1:1"], ["--policy-server is for --policy remote"]),
    (["serve", "--policy", "expert"], ["'expert' cannot be served", "reference"]),
    (["serve", "--policy", "gpt"], ["'gpt'", "reference"]),
])
def test_bad_remote_input_exits_2_with_one_line(args, fragments):
    assert_user_error(run_cli(*args, timeout=120), *fragments)


@pytest.mark.parametrize("changes, fragments", [
    ({"action_dim": 6}, ["action dimension 6", "7"]),
    ({"modes": ["planning"]}, ["no 'direct' mode", "planning"]),
    ({"cameras": ["agentview", "eye_in_hand"]}, ["['eye_in_hand']", "agentview, wrist"]),
    ({"protocol": "openpi/0"}, ["incompatible", "'openpi/0'"]),
])
def test_incompatible_server_exits_2_naming_the_mismatch(fake_server, changes, fragments):
    url = fake_server(metadata=fake_metadata(**changes))
    assert_user_error(run_cli("run", "--policy", "remote", "--policy-server", url, "--mode", "direct", "--episodes", "1", "--max-steps", "16", timeout=120), *fragments)


def test_run_against_a_vanishing_server_ends_cleanly_and_resume_finishes_it(served_reference, fake_server, tmp_path):
    from stress.policies.remote import probe
    from stress.store import RunStore

    # the same identity as the real server; it answers the pre-run check, then drops every episode at its first decision
    gone = fake_server(metadata=probe(served_reference), server_class=DropsAfterTheCheck)
    proc = run_cli("run", "--policy", "remote", "--policy-server", gone, "--mode", "direct", "--episodes", "2", "--max-steps", "16", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = next(tmp_path.iterdir())
    store = RunStore.open(run)
    rows = store.query("SELECT episode_key, error FROM episodes")
    assert len(rows) == 2 and all(r["error"].startswith("policy_unavailable: ") for r in rows), rows
    assert store.done_keys() == set()
    assert store.manifest["config"]["policy_server"]["policy"]["name"] == "reference"
    proc = run_cli("run", "--resume", str(run), "--policy-server", served_reference, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = store.query("SELECT episode_key, error, steps FROM episodes")
    assert len(rows) == 2 and all(r["error"] is None and r["steps"] == 16 for r in rows), rows
    assert store.done_keys() == {r["episode_key"] for r in rows}


# --- futures in the model's own view (Cosmos: JPEG q95 -> 224 -> 90 % centre crop -> 224) -----------------
def test_cosmos_view_transform_of_true_futures():
    from stress.measurement.groundtruth import FUTURE_VIEWS, cosmos_view

    grey = np.full((256, 256, 3), 120, np.uint8)
    assert cosmos_view(grey).shape == (224, 224, 3) and np.abs(cosmos_view(grey).astype(int) - 120).max() <= 2
    framed = grey.copy()
    framed[:5], framed[-5:], framed[:, :5], framed[:, -5:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
    out = cosmos_view(framed).astype(int)
    # the red 5 px border at 256 px lies outside the 212 px centre crop of 224 (JPEG's chroma ringing aside)
    assert (out[..., 0] - out[..., 1]).max() < 20
    dot = np.zeros((256, 256), np.uint8)
    dot[120:136, 120:136] = 255  # a centred 16 px square: 1/0.9 larger in the cropped view, still centred
    mask = cosmos_view(dot, jpeg=False) > 127
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - 111.5) < 1 and abs(cols.mean() - 111.5) < 1 and 13 <= rows.max() - rows.min() + 1 <= 17
    assert FUTURE_VIEWS["cosmos"] is cosmos_view


# --- a served policy for ALOHA: the protocol carries the simulator's own sizes ---------------------------------
class HoldStillAloha:
    """Holds gym-aloha's start pose (14-D joint positions) in 50-step chunks, values and futures included,
    as a world-model policy for ALOHA would answer; it looks at the three cameras it is sent."""

    name, modes, uses_images = "hold-still-aloha", ("direct",), True

    def reset(self, instruction, seed, mode="direct", n_candidates=1, aggregation=None):
        self.instruction = instruction

    def act(self, obs):
        from gym_aloha.constants import START_ARM_POSE

        assert sorted(obs.images) == ["left_wrist", "right_wrist", "top"] and obs.images["top"].shape == (224, 224, 3)
        assert obs.proprio.shape == (14,)
        pose = np.r_[START_ARM_POSE[:6], 1.0, START_ARM_POSE[8:14], 1.0]  # grippers open (normalised 1)
        return SimpleNamespace(actions=np.tile(pose, (50, 1)), predicted_value=0.2, predicted_future={"top": obs.images["top"]},
                               candidates=[], chosen=None, aggregation=None, info={})


def test_a_served_aloha_policy_runs_on_aloha_and_a_libero_one_is_refused(fake_server, tmp_path):
    aloha = fake_server(HoldStillAloha, describe(HoldStillAloha, version="1", chunk=50, image_size=224, cameras=("top", "left_wrist", "right_wrist"),
                                                 action_dim=14, proprio_dim=14, predictions=("future", "value")))
    out = tmp_path / "runs"
    run = run_cli("run", "--suite", "aloha", "--tasks", "1", "--episodes", "1", "--policy", "remote", "--policy-server", aloha,
                  "--max-steps", "100", "--no-baseline", "--out", str(out), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    import pyarrow.parquet as pq

    folder = next(out.iterdir())
    [row] = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert row["suite"] == "aloha" and row["error"] is None and not row["success"] and row["steps"] == 100 and row["decisions"] == 2
    decisions = pq.read_table(folder / "decisions.parquet").to_pylist()
    assert [d["pred_value"] for d in decisions] == [0.2, 0.2] and all(d["future_psnr_top"] > 0 for d in decisions)
    libero = fake_server()  # the LIBERO-shaped fake: 7-D actions, 9-D proprio, agentview + wrist
    assert_user_error(run_cli("run", "--suite", "aloha", "--tasks", "0", "--policy", "remote", "--policy-server", libero, "--out", str(out)),
                      "has action dimension 7; aloha needs 14")


def test_the_store_has_world_model_columns_for_every_simulators_cameras():
    from stress.envs import simulator, simulator_names
    from stress.core.cameras import STORED_CAMERAS

    for name in simulator_names():
        assert set(simulator(name).cameras) <= set(STORED_CAMERAS), name
