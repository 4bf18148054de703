"""``--policy cosmos-deploy``: the client of Cosmos Policy's own ALOHA deploy.py, against a real HTTP server honouring
its contract (tests/deploy_server.py), and the pre-run inference check every served policy goes through."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import json_numpy
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_cli
from deploy_server import answer
from PIL import Image

from scenarios.grid import check_servers
from stress.core.errors import UserError
from stress.core.policy import Observation
from stress.core.spec import ScenarioSpec
from stress.policies.client import MalformedResponse, ServerError
from stress.policies.cosmos_deploy import (
    CosmosDeployPolicy,
    check_served,
    decode,
    deploy_request,
    describe,
    encode,
    parse_reply,
    served_id,
)

TASK = "transfer the cube"


def aloha_obs(size: int = 256) -> Observation:
    rng = np.random.default_rng(5)
    return Observation(images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in ("top", "left_wrist", "right_wrist")},
                       proprio=rng.normal(size=14), instruction=TASK, step=0)


def start_deploy_server(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("deploy_server.py")), "--port", "0", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    url = proc.stderr.readline().strip()
    assert url.startswith("http://"), url + proc.stderr.read()
    return proc, url


@pytest.fixture
def deploy_server():
    procs = []

    def start(*args):
        proc, url = start_deploy_server(*args)
        procs.append(proc)
        return proc, url

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def wire(request: dict, queries: int = 1, reply: str = "planning", double: bool = False):
    """A request through deploy.py's contract and back, as bytes on the wire both ways."""
    payload = json_numpy.loads(encode(request))
    if double:
        payload = json_numpy.loads(json.loads(json.dumps({"encoded": json_numpy.dumps(payload)}))["encoded"])  # deploy.py's "encoded" form
    response, _ = answer(payload, queries, reply)
    return decode(json_numpy.dumps(json_numpy.dumps(response) if double else response).encode())


# --- the mapping -------------------------------------------------------------------------------------------------
def test_request_is_the_aloha_eval_clients():
    obs = aloha_obs()
    request = deploy_request(obs, return_all=True)
    assert sorted(request) == ["left_wrist_image", "primary_image", "proprio", "return_all_query_results", "right_wrist_image", "task_description"]
    for camera, key in (("top", "primary_image"), ("left_wrist", "left_wrist_image"), ("right_wrist", "right_wrist_image")):
        expected = np.asarray(Image.fromarray(obs.images[camera]).resize((224, 224)))  # run_aloha_eval.resize_images: PIL's default filter
        assert request[key].dtype == np.uint8 and np.array_equal(request[key], expected)
    assert request["task_description"] == TASK and request["return_all_query_results"] is True
    decoded = json_numpy.loads(encode(request))  # json_numpy on the wire, bit for bit
    assert np.array_equal(decoded["proprio"], obs.proprio) and np.array_equal(decoded["primary_image"], request["primary_image"])
    small = aloha_obs(224)
    assert np.array_equal(deploy_request(small, False)["left_wrist_image"], small.images["left_wrist"])  # already 224: sent as is


@pytest.mark.parametrize("double", [False, True])
def test_reply_mapping(double):
    request = deploy_request(aloha_obs(), return_all=True)
    planned = parse_reply(wire(request, queries=4, double=double))
    proprio = request["proprio"].astype(np.float32)
    assert planned.kind == "planning" and len(planned.candidates) == 4 and planned.chosen == 2  # query 2's value 0.9 beats the base seed's
    assert np.array_equal(planned.actions, planned.candidates[2].actions) and planned.actions.shape == (50, 14)
    assert np.allclose(planned.actions[:, 1:], proprio[1:]) and planned.value == 0.9
    assert [c.predicted_value for c in planned.candidates] == [0.5, 0.49, 0.9, 0.47]
    assert sorted(planned.future) == ["left_wrist", "right_wrist", "top"]
    assert np.array_equal(planned.candidates[0].predicted_future["right_wrist"], request["right_wrist_image"])
    assert served_id(planned) == "deploy.py:planning4:chunk50:value+future"
    direct = parse_reply(wire(request, queries=1))
    assert direct.kind == "direct" and not direct.candidates and direct.chosen is None and describe(direct)["modes"] == ["direct"]
    bare = parse_reply(wire(request, reply="actions"))
    assert bare.kind == "actions" and bare.value is None and bare.future is None and served_id(bare) == "deploy.py:actions:chunk50"
    assert CosmosDeployPolicy.actions_only_for({"served": served_id(bare)}) and not CosmosDeployPolicy.actions_only_for({"served": served_id(direct)})


@pytest.mark.parametrize("reply, error", [
    ("no-actions", "reply has no 'actions'"),
    ("wrong-shape", "field 'actions' has shape (50, 7); expected (chunk, 14)"),
    ("nan", "field 'actions' holds NaN"),
])
def test_bad_replies_are_malformed_responses(reply, error):
    with pytest.raises(MalformedResponse, match=re.escape(error)):
        parse_reply(wire(deploy_request(aloha_obs(), True), queries=2, reply=reply))
    with pytest.raises(ServerError, match="answered 'error'"):
        decode(json.dumps("error").encode())  # deploy.py's reply to a request it failed on
    with pytest.raises(MalformedResponse, match="ragged"):
        parse_reply({"actions": [np.zeros(14), np.zeros(13)]})


def test_a_server_runs_only_what_it_is_configured_for():
    planning = describe(parse_reply(wire(deploy_request(aloha_obs(), True), queries=8)))
    check_served(planning, "http://h:1", "planning", 8, planning["served"])
    for mode, n, served, fragment in (("direct", 1, None, "--mode direct is not served; valid: --mode planning"),
                                      ("planning", 4, None, "--candidates 4 is not served; valid: --candidates 8"),
                                      ("planning", 8, "deploy.py:direct:chunk50:value+future", "the run was started with")):
        with pytest.raises(UserError, match=re.escape(fragment)):
            check_served(planning, "http://h:1", mode, n, served)


# --- the pre-run inference check (every served policy) ----------------------------------------------------------
def aloha_spec(policy: str, url: str, mode: str = "direct", n: int = 1) -> ScenarioSpec:
    return ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy=policy, mode=mode, n_candidates=n, aggregation="average" if mode == "planning" else None,
                        image_size=256, max_steps=50, policy_options=(("server", url),))


def test_the_pre_run_check_names_each_mismatch(deploy_server):
    for reply, fragment in (("no-actions", "reply has no 'actions'"), ("wrong-shape", "shape (50, 7); expected (chunk, 14)"), ("nan", "NaN")):
        _, url = deploy_server("--reply", reply)
        with pytest.raises(UserError, match=re.escape(fragment)):
            check_servers([aloha_spec("cosmos-deploy", url)])
    _, url = deploy_server()
    ws = url.replace("http://", "ws://")
    for policy in ("remote", "openpi"):  # websocket clients at deploy.py's HTTP server
        with pytest.raises(UserError, match="does not speak websocket"):
            check_servers([aloha_spec(policy, ws)])
    from websockets.sync.server import serve

    server = serve(lambda connection: None, "127.0.0.1", 0)  # an HTTP client at a websocket server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UserError, match="speaks websocket, not deploy.py's HTTP"):
            check_servers([aloha_spec("cosmos-deploy", f"http://127.0.0.1:{server.socket.getsockname()[1]}")])
    finally:
        server.shutdown()


def test_the_probe_is_the_pre_run_checks_only_request(deploy_server, tmp_path):
    """deploy.py has no handshake: the probe's one real request says what is served and is the inference check too."""
    log = tmp_path / "requests.jsonl"
    _, url = deploy_server("--queries", "3", "--log", str(log))
    metadata = check_servers([aloha_spec("cosmos-deploy", url, "planning", 3)])
    assert metadata["served"].startswith("deploy.py:planning3:chunk50") and len(log.read_text().splitlines()) == 1
    with pytest.raises(UserError, match=re.escape("--candidates 2 is not served; valid: --candidates 3")):  # a wrong run: still one line, no new request
        check_servers([aloha_spec("cosmos-deploy", url, "planning", 2)])
    assert len(log.read_text().splitlines()) == 1


# --- end to end through the CLI ----------------------------------------------------------------------------------
def test_bad_reply_exits_2_before_the_run(deploy_server, tmp_path):
    _, url = deploy_server("--reply", "nan")
    out = tmp_path / "runs"
    run = run_cli("run", "--suite", "aloha", "--policy", "cosmos-deploy", "--policy-server", url, "--max-steps", "50", "--out", str(out), timeout=300)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr, run.stderr
    assert "failed the inference check" in run.stderr and "NaN" in run.stderr and not out.exists()


def test_actions_only_server_runs_every_robustness_table(deploy_server, tmp_path):
    log = tmp_path / "requests.jsonl"
    _, url = deploy_server("--reply", "actions", "--log", str(log))
    out = tmp_path / "runs"
    run = run_cli("run", "--suite", "aloha", "--episodes", "1", "--policy", "cosmos-deploy", "--policy-server", url, "--max-steps", "100", "--out", str(out), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "not provided by this policy (actions only): planning vs direct; value over-estimation; world model vs copy-frame" in run.stdout
    folder = next(out.iterdir())
    [row] = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert row["error"] is None and row["steps"] == 100 and row["decisions"] == 2 and row["mode"] == "direct"  # --mode auto: what it serves
    assert json.loads(row["spec"])["policy_options"]["served"] == "deploy.py:actions:chunk50"  # what is served is in the key
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(sent) == 3  # the probe, which is the pre-run check's request too, and two decisions
    # parity: the actions executed are those the server returned, bit for bit (float32 on the wire)
    executed = np.load(folder / "actions" / f"{row['episode_key']}.npz")["actions"]
    assert np.array_equal(executed, np.concatenate([np.asarray(r["actions"], np.float32) for r in sent[-2:]]).astype(np.float64))


def test_planning_run_survives_a_lost_server_and_resume_finishes_it(deploy_server, tmp_path):
    # the probe (the pre-run check's request too) and the first decision are answered; the server is gone at the second
    _, url = deploy_server("--queries", "3", "--die-after", "2")
    out = tmp_path / "runs"
    args = ("--suite", "aloha", "--episodes", "1", "--policy", "cosmos-deploy", "--mode", "planning", "--candidates", "3", "--max-steps", "100", "--no-baseline",
            "--perturb", "lighting:3", "--out", str(out))
    first = run_cli("run", *args, "--policy-server", url, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    folder = next(out.iterdir())
    [row] = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert row["error"].startswith("policy_unavailable: policy server") and "unreachable" in row["error"]
    log = tmp_path / "requests.jsonl"
    _, again = deploy_server("--queries", "3", "--log", str(log))
    resumed = run_cli("run", "--resume", str(folder), "--policy-server", again, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    [row] = pq.read_table(folder / "episodes.parquet").to_pylist()
    assert row["error"] is None and row["decisions"] == 2 and row["steps"] == 100
    decisions = pq.read_table(folder / "decisions.parquet").to_pylist()
    chosen = [d for d in decisions if d["candidate"] == 2]
    assert len(decisions) == 8 and all(d["chosen"] and d["pred_value"] == 0.9 for d in chosen)
    assert [d["pred_value"] for d in decisions if d["candidate"] == 0] == [0.5, 0.5]
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(r["return_all"] for r in sent) and len({r["images"]["primary_image"] for r in sent[-2:]}) == 2


# --- optional: the real deploy.py ----------------------------------------------------------------------------------
def test_real_deploy_py_on_cpu_with_a_fake_network(tmp_path):
    """Cosmos Policy's own deploy.py (its FastAPI app, json_numpy, the real cosmos_utils), unmodified, with a fake
    network on the CPU (tests/cosmos_deploy_probe.py), driven by ``stress run --policy cosmos-deploy``: the bytes
    deploy.py receives are those of the suite's first observation, and the actions executed are those it returned."""
    checkout, python = os.environ.get("COSMOS_POLICY_CHECKOUT"), os.environ.get("COSMOS_POLICY_PYTHON")
    if not checkout or not python:
        pytest.skip("set COSMOS_POLICY_CHECKOUT to a cosmos-policy checkout and COSMOS_POLICY_PYTHON to a Python that imports it "
                    "with draccus, json_numpy, uvicorn and fastapi")
    from stress.runners.preflight import first_observation

    log = tmp_path / "requests.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "tests"), str(ROOT), checkout)), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([python, str(ROOT / "tests" / "cosmos_deploy_probe.py"), checkout, str(tmp_path / "work"), str(log), "--queries", "2", "aloha"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=checkout)
    try:
        lines = []
        for line in proc.stderr:  # its imports warn first; the address comes once deploy.py's server is built
            lines.append(line)
            if line.startswith("http://"):
                break
        else:
            proc.wait(timeout=30)
            if proc.returncode == 77:
                pytest.skip("the checkout's deploy.py is not importable by COSMOS_POLICY_PYTHON")
            raise AssertionError("".join(lines)[-3000:])
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        url = lines[-1].strip()
        deadline = time.monotonic() + 120  # uvicorn listens moments after the line
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "deploy.py never listened"
                time.sleep(0.5)
        out = tmp_path / "runs"
        run = run_cli("run", "--suite", "aloha", "--episodes", "1", "--policy", "cosmos-deploy", "--policy-server", url, "--mode", "planning",
                      "--candidates", "2", "--max-steps", "100", "--out", str(out), timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
        folder = next(out.iterdir())
        [row] = pq.read_table(folder / "episodes.parquet").to_pylist()
        assert row["error"] is None and row["decisions"] == 2 and json.loads(row["spec"])["policy_options"]["served"].startswith("deploy.py:planning2:chunk50")
        sent = [json.loads(line) for line in log.read_text().splitlines()]
        # parity 1: the first request (the probe) carries the suite's first observation, byte for byte after deploy.py's own decoding
        spec = ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy="cosmos-deploy", image_size=256)
        request = deploy_request(first_observation(spec)[0], True)

        for key in ("primary_image", "left_wrist_image", "right_wrist_image"):
            assert sent[0][key] == hashlib.sha256(np.asarray(request[key], dtype=np.uint8).tobytes()).hexdigest(), key
        assert sent[0]["proprio"] == hashlib.sha256(np.asarray(request["proprio"]).tobytes()).hexdigest()
        # parity 2: the actions executed are the chunks deploy.py returned, in order
        executed = np.load(folder / "actions" / f"{row['episode_key']}.npz")["actions"]
        returned = np.concatenate([np.asarray(r["actions"], np.float32) for r in sent[-2:]]).astype(np.float64)
        assert executed.shape == (100, 14) and np.array_equal(executed, returned)
    finally:
        proc.kill()
        proc.wait()
