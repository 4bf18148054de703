"""The Cosmos Policy server (stress/policies/cosmos_server.py, docs/cosmos-policy.md) against a stand-in for
``cosmos_utils`` (tests/fake_cosmos: the real signatures and return shapes, a deterministic fake model),
served over real sockets on 127.0.0.1 and driven by the suite's ``remote`` client: metadata, direct and
planning replies, Cosmos's seed and ensemble schedule, the exact aggregation, and every pitfall listed in
docs/cosmos-policy.md (flip, 256 px, a seed per decision, actions[:H], data_batch copies, GPU tensors dropped, crashing mode
combinations and T5 cache misses refused as errors). The last test runs the real repository's code on a CPU
with a fake network when a checkout is available (COSMOS_POLICY_CHECKOUT)."""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from stress.core.policy import Observation
from stress.policies.cosmos_server import add_arguments, make_server
from stress.policies.planning import aggregate
from stress.policies.remote import RemotePolicy, ServerError, probe
from stress.policies.serve import pack, unpack
from test_cli_errors import assert_user_error

FAKE = ROOT / "tests" / "fake_cosmos"
TASK0 = "pick up the black bowl between the plate and the ramekin and place it on the plate"  # libero_spatial task 0
OTHER = "open the top drawer of the cabinet"


# --- the user's Cosmos files, faked: a checkpoint, dataset statistics, a T5 cache ----------------------------
@pytest.fixture(scope="module")
def cosmos_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosmos")
    (root / "model.pt").write_bytes(b"fake cosmos weights")
    stats = {"actions_min": [-0.9, -0.9, -0.9, -0.3, -0.3, -0.3, -1.0], "actions_max": [0.9, 0.9, 0.9, 0.3, 0.3, 0.3, 1.0],
             "proprio_min": [0.0, -0.04, -0.5, -0.5, 0.5, -1, -1, -1, -1], "proprio_max": [0.04, 0.0, 0.5, 0.5, 1.5, 1, 1, 1, 1]}
    (root / "stats.json").write_text(json.dumps(stats))
    rng = np.random.default_rng(0)
    cache = {text: rng.standard_normal((1, 512, 1024)).astype(np.float32) for text in (TASK0, OTHER)}
    (root / "t5.pkl").write_bytes(pickle.dumps(cache))
    return root


def cosmos_args(files: Path, *extra: str) -> list[str]:
    return ["--cosmos-checkout", str(FAKE), "--cosmos-ckpt", str(files / "model.pt"), "--cosmos-dataset-stats", str(files / "stats.json"),
            "--cosmos-t5-embeddings", str(files / "t5.pkl"), *extra]


@pytest.fixture(scope="module")
def cu(cosmos_files):
    """The stand-in module as the in-process servers import it (from --cosmos-checkout)."""
    serve_in_thread(cosmos_files)  # puts the checkout on sys.path and imports cosmos_utils once
    from cosmos_policy.experiments.robot import cosmos_utils

    return cosmos_utils


_servers = []


def serve_in_thread(files: Path, *extra: str) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    add_arguments(parser)
    server = make_server(parser.parse_args(cosmos_args(files, *extra)), log=lambda text: None)
    ready = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"ready": lambda port: ready.set()}, daemon=True).start()
    assert ready.wait(10)
    _servers.append(server)
    return f"ws://127.0.0.1:{server.port}"


@pytest.fixture(scope="module", autouse=True)
def _shutdown():
    yield
    while _servers:
        _servers.pop().shutdown()


def observation(step: int = 0, size: int = 256, instruction: str = TASK0) -> Observation:
    # upright scenes with a bright top half: where the brightness ends up in the futures shows the orientation
    agentview = np.zeros((size, size, 3), np.uint8)
    agentview[: size // 2] = 230
    agentview[size // 2:, : size // 4] = 90
    wrist = np.full((size, size, 3), 40, np.uint8)
    wrist[: size // 4] = 200
    proprio = np.array([0.02, -0.02, 0.1, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    return Observation(images={"agentview": agentview, "wrist": wrist}, proprio=proprio, instruction=instruction, step=step)


def raw_session(url: str, *messages: dict) -> list[dict]:
    """Send protocol messages by hand (settings or aggregations the suite's client never sends)."""
    from websockets.sync.client import connect

    with connect(url, compression=None, max_size=None) as ws:
        unpack(ws.recv(timeout=10))
        replies = []
        for message in messages:
            ws.send(pack(message))
            replies.append(unpack(ws.recv(timeout=60)))
    return replies


def wire(obs: Observation) -> dict:
    return {"images": obs.images, "proprio": obs.proprio, "instruction": obs.instruction, "step": obs.step}


# --- the served metadata and the command line ---------------------------------------------------------------
def start_cosmos_server(files: Path, *extra: str) -> subprocess.Popen:
    """A real `stress serve --policy cosmos` subprocess on a free port (its address: ``_address``)."""
    return subprocess.Popen([sys.executable, "-m", "stress.cli", "serve", "--port", "0", "--policy", "cosmos", *cosmos_args(files, *extra)],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def _address(proc: subprocess.Popen) -> str:
    """The ws:// address a starting server prints after its loading progress lines."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        match = re.search(r"ws://[\d.]+:\d+", line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining: a full pipe would block the server
            return match.group(0)
    pytest.fail("the server exited: " + "".join(lines))


@pytest.fixture(scope="module")
def served_cosmos(cosmos_files):
    """A real `stress serve --policy cosmos` subprocess on the stand-in, with the served defaults set so that
    planning is a combination Cosmos's loop crashes on (direct episodes work, planning ones are refused)."""
    proc = start_cosmos_server(cosmos_files, "--cosmos-set", "ar_future_prediction=false")
    yield _address(proc)
    proc.terminate()
    proc.wait(timeout=30)


def test_stress_serve_cosmos_metadata(served_cosmos, cosmos_files):
    import hashlib

    meta = probe(served_cosmos)
    assert meta["policy"] == {"name": "cosmos-policy", "version": "model.pt@" + hashlib.sha256(b"fake cosmos weights").hexdigest()[:12]}
    assert (meta["chunk"], meta["action_dim"], meta["proprio_dim"], meta["image_size"]) == (16, 7, 9, 256)
    assert meta["cameras"] == ["agentview", "wrist"] and meta["modes"] == ["direct", "planning"] and meta["image_orientation"] == "upright"
    assert meta["aggregations"] == ["average", "lcb", "success_vote", "majority_mean"]
    assert set(meta["predictions"]) >= {"value", "future_images", "candidates", "ensemble_values"}
    assert meta["settings"]["num_denoising_steps"] == 5 and meta["settings"]["ar_future_prediction"] is False
    assert meta["software"]["cfg"]["suite"] == "libero" and meta["software"]["cfg"]["chunk_size"] == 16
    assert meta["software"]["hf_hub_offline"] == "1" and meta["hardware"]["device"] == "cpu"  # offline by default; the device recorded
    assert meta["instructions"] == sorted([TASK0, OTHER])


def test_module_imports_only_numpy_msgpack_websockets_and_the_standard_library():
    """It must install into Cosmos's own Python: nothing else is imported until a checkout is loaded."""
    code = ("import json, sys; before = set(sys.modules); import stress.policies.cosmos_server; "
            "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    loaded = {m for m in json.loads(proc.stdout) if "cython" not in m}  # compiled extensions' runtime modules
    assert loaded <= {"numpy", "msgpack", "websockets", "stress"}, proc.stdout + proc.stderr


@pytest.mark.parametrize("python", [sys.executable, os.environ.get("COSMOS_SERVER_PYTHON")], ids=["this-python", "COSMOS_SERVER_PYTHON"])
def test_standalone_copy_serves_without_the_suite(cosmos_files, tmp_path, python):
    """cosmos_server.py + serve.py copied into another environment (the suite not importable) serve alike; with
    COSMOS_SERVER_PYTHON (e.g. a Python 3.10 with numpy, msgpack and websockets only), under that Python too."""
    import shutil

    if python is None:
        pytest.skip("set COSMOS_SERVER_PYTHON to another Python with numpy, msgpack and websockets (Cosmos's 3.10 or 3.12)")

    for name in ("serve.py", "cosmos_server.py"):
        shutil.copy(ROOT / "stress" / "policies" / name, tmp_path / name)
    blocked = "import runpy, sys; sys.modules['stress'] = None; sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
    proc = subprocess.Popen([python, "-c", blocked, str(tmp_path / "cosmos_server.py"), "--port", "0", *cosmos_args(cosmos_files)],
                            cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": ""})
    try:
        url = _address(proc)
        meta = probe(url)
        assert meta["policy"]["name"] == "cosmos-policy" and meta["chunk"] == 16
        version = subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True).stdout.strip()
        assert meta["software"]["python"] == version  # served by that Python
        client = RemotePolicy(server=url)
        with pytest.raises(ServerError, match="bad_request: UserError: instruction 'stack the blocks'"):  # its own UserError, one line
            client.reset("stack the blocks", seed=0, mode="direct")
        client.reset(TASK0, seed=0, mode="direct")
        assert client.act(observation()).actions.shape == (16, 7)
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("extra, fragments", [
    ([], ["--cosmos-checkout"]),
    (["--cosmos-checkout", "/nonexistent"], ["'/nonexistent'", "cosmos_policy/"]),
    (["--cosmos-checkout", str(FAKE), "--cosmos-execute", "20"], ["--cosmos-execute 20", "1-16"]),
    (["--cosmos-checkout", str(FAKE), "--cosmos-set", "n_futures=many"], ["'n_futures=many'", "int"]),
    (["--cosmos-checkout", str(FAKE), "--cosmos-set", "temperature=1"], ["'temperature=1'", "num_denoising_steps"]),
    (["--cosmos-checkout", str(FAKE), "--cosmos-dataset-stats", "/nowhere/stats.json"], ["--cosmos-dataset-stats '/nowhere/stats.json'", "HF id"]),
    (["--cosmos-checkout", str(FAKE), "--cosmos-planning-ckpt", str(FAKE)], ["--cosmos-planning-config"]),
])
def test_bad_cosmos_flags_exit_2_with_one_line(extra, fragments):
    assert_user_error(run_cli("serve", "--policy", "cosmos", "--port", "0", *extra, timeout=120), *fragments)


def test_cosmos_flags_refused_for_other_policies():
    assert_user_error(run_cli("serve", "--policy", "reference", "--cosmos-execute", "8", timeout=120), "--cosmos-execute", "--policy cosmos")


def test_a_non_libero_action_dim_is_refused_at_start(cosmos_files, tmp_path):
    """cosmos_utils binds ACTION_DIM from sys.argv at import: a checkout resolving to ALOHA's 14 is refused."""
    import shutil

    shutil.copytree(FAKE, tmp_path / "checkout")
    (tmp_path / "checkout" / "cosmos_policy" / "constants.py").write_text("ACTION_DIM = 14\nPROPRIO_DIM = 14\n")
    args = [*cosmos_args(cosmos_files), "--cosmos-checkout", str(tmp_path / "checkout")]
    assert_user_error(run_cli("serve", "--policy", "cosmos", "--port", "0", *args, timeout=120), "ACTION_DIM is 14", "LIBERO needs 7")


def test_chunk_mismatch_and_empty_t5_cache_refused_at_start(cosmos_files, tmp_path):
    (tmp_path / "empty.pkl").write_bytes(pickle.dumps({}))
    args = cosmos_args(cosmos_files, "--cosmos-t5-embeddings", str(tmp_path / "empty.pkl"))
    assert_user_error(run_cli("serve", "--policy", "cosmos", "--port", "0", *args, timeout=120), "loaded no instruction")
    args = cosmos_args(cosmos_files, "--cosmos-config", "libero_chunk8_inference")
    proc = run_cli("serve", "--policy", "cosmos", "--port", "0", *args, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]  # after the "loading" progress line
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "chunk_size 8" in last and "16" in last, proc.stderr


# --- direct mode: a seed per decision, upright images passed as they are, GPU tensors dropped -------------------
def test_direct_decisions(cu, cosmos_files):
    from cosmos_policy.experiments.robot.cosmos_utils import GPUTensor

    url = serve_in_thread(cosmos_files)
    client = RemotePolicy(server=url)
    client.reset(TASK0, seed=7, mode="direct")
    cu.LOG.clear()
    first, second = client.act(observation(0)), client.act(observation(16))
    client.close()
    seeds = [c["seed"] for c in cu.LOG if c["call"] == "generate"]
    assert seeds == [7000, 7001] and (first.info["seed"], second.info["seed"]) == (7000, 7001)  # a seed per decision
    assert [c["num_steps"] for c in cu.LOG] == [5, 5]
    assert not np.array_equal(first.actions, second.actions)
    assert first.actions.shape == (16, 7) and first.actions.dtype == np.float64 and 0 <= first.predicted_value <= 1
    assert first.candidates == [] and first.chosen is None
    assert first.info["future_view"] == "cosmos"  # the suite's ground truth compares true futures in the model's view
    # the futures (224 px, the model's view) keep the upright scene's bright top: no flip, no 180° rotation
    agentview, wrist = first.predicted_future["agentview"], first.predicted_future["wrist"]
    assert agentview.shape == wrist.shape == (224, 224, 3) and agentview.dtype == np.uint8
    assert agentview[:80].mean() > agentview[-80:].mean() + 50 and wrist[:30].mean() > wrist[-30:].mean() + 50
    bottom = agentview[-60:]
    assert bottom[:, :50].mean() > bottom[:, -50:].mean() + 20  # the bottom-left patch stays left: no mirror either
    # the same request again gives the same chunk (deterministic given the seed)
    client.reset(TASK0, seed=7, mode="direct")
    assert np.array_equal(client.act(observation(0)).actions, first.actions)
    client.close()
    gc.collect()
    # nothing of get_action's return dict outlives a decision: only the T5 cache's tensors are alive
    assert len(GPUTensor.live) == len(cu.t5_text_embeddings_cache)


def test_actions_are_the_first_h(cu, cosmos_files):
    full, short = serve_in_thread(cosmos_files), serve_in_thread(cosmos_files, "--cosmos-execute", "8")
    assert probe(short)["chunk"] == 8
    chunks = []
    for url in (full, short):
        client = RemotePolicy(server=url)
        client.reset(TASK0, seed=3, mode="direct")
        chunks.append(client.act(observation()).actions)
        client.close()
    assert chunks[1].shape == (8, 7) and np.array_equal(chunks[1], chunks[0][:8])  # actions[:H], not the last H


# --- planning: Cosmos's primitives, seeds seed + i, M futures x L values, the exact aggregation --------------
def test_planning_schedule_members_and_aggregation(cu, cosmos_files):
    url = serve_in_thread(cosmos_files, "--cosmos-set", "num_denoising_steps_future_state=3", "--cosmos-set", "num_denoising_steps_value=5")
    client = RemotePolicy(server=url, n_futures=2, n_values=3)
    client.reset(TASK0, seed=2, mode="planning", n_candidates=3, aggregation="lcb")
    cu.LOG.clear()
    decision = client.act(observation())
    client.close()
    base = 2000
    assert [c.seed for c in decision.candidates] == [base, base + 1, base + 2]
    members = np.array([c.ensemble_values for c in decision.candidates])
    assert members.shape == (3, 6) and len(np.unique(members)) > 6  # M x L raw values per candidate, not one repeated
    scores = aggregate(members, "lcb")  # the suite's Cosmos-exact aggregation (unbiased std, clamped)
    assert np.allclose([c.predicted_value for c in decision.candidates], scores, atol=1e-6)
    assert decision.chosen == int(np.argmax(scores)) and decision.aggregation == "lcb"
    assert np.array_equal(decision.actions, decision.candidates[decision.chosen].actions)
    assert decision.predicted_value == decision.candidates[decision.chosen].predicted_value
    # the model calls per candidate, in Cosmos's order and schedule
    generate = [c for c in cu.LOG if c["call"] == "generate"]
    assert len(generate) == 3 * (1 + 2 + 2 * 3)
    for i in range(3):
        calls = generate[i * 9:(i + 1) * 9]
        seed = base + i
        assert (calls[0]["seed"], calls[0]["num_steps"], calls[0]["ncf"]) == (seed, 5, 4)  # the action sample
        assert [(c["seed"], c["num_steps"], c["ncf"]) for c in calls[1:3]] == [(seed, 1, 5), (seed + 1, 3, 5)]  # futures: seed + k, linspace(1, 3, 2)
        assert [(c["seed"], c["num_steps"], c["ncf"], c["mask"]) for c in calls[3:]] == [(seed + j, s, 8, False) for _ in range(2) for j, s in enumerate((1, 3, 5))]
        assert decision.candidates[i].predicted_future["agentview"].shape == (224, 224, 3)
    # every helper got data_batch as get_action built it (they rewrite it in place)
    helpers = [c for c in cu.LOG if c["call"] != "generate"]
    assert len(helpers) == 3 * (1 + 6) and all(c["ncf"] == 4 and c["mask"] is None for c in helpers)
    schedule = decision.info["schedules"][1]
    assert schedule == {"seed": base + 1, "future_seeds": [base + 1, base + 2], "future_steps": [1, 3], "value_seeds": [base + 1, base + 2, base + 3], "value_steps": [1, 3, 5]}


def test_one_value_per_future_uses_num_denoising_steps_value(cu, cosmos_files):
    """M > 1 futures, L = 1 value: Cosmos's value-ensemble flag is off, so its value call takes
    num_denoising_steps_value (not linspace(1, steps, 1) = one step)."""
    url = serve_in_thread(cosmos_files, "--cosmos-set", "num_denoising_steps_value=5")
    client = RemotePolicy(server=url, n_futures=2, n_values=1)
    client.reset(TASK0, seed=2, mode="planning", n_candidates=1, aggregation="average")
    cu.LOG.clear()
    decision = client.act(observation())
    client.close()
    generate = [c for c in cu.LOG if c["call"] == "generate"]
    assert len(generate) == 1 + 2 + 2 and [c["num_steps"] for c in generate[3:]] == [5, 5]
    assert decision.info["schedules"][0]["value_steps"] == [5]


def test_planning_matches_cosmos_own_ensemble_call(cu, cosmos_files):
    """A candidate's score equals what Cosmos's own get_value_prediction ensemble computes for it."""
    from stress.policies.cosmos_server import LIBERO_CFG

    url = serve_in_thread(cosmos_files, "--cosmos-set", "num_denoising_steps_future_state=3", "--cosmos-set", "num_denoising_steps_value=2")
    client = RemotePolicy(server=url, n_futures=3, n_values=2)
    client.reset(TASK0, seed=5, mode="planning", n_candidates=1, aggregation="majority_mean")
    served = client.act(observation()).candidates[0]
    client.close()
    cfg = argparse.Namespace(**{**LIBERO_CFG, "value_ensemble_aggregation_scheme": "majority_mean"})
    stats = cu.load_dataset_stats(str(cosmos_files / "stats.json"))
    model = cu.FakeModel("base")
    obs = observation()
    r = cu.get_action(cfg, model, stats, {"primary_image": obs.images["agentview"], "wrist_image": obs.images["wrist"], "proprio": obs.proprio}, TASK0,
                      seed=5000, num_denoising_steps_action=5, generate_future_state_and_value_in_parallel=False)
    fs = cu.get_future_state_prediction(cfg, model, r["data_batch"], r["generated_latent"], r["orig_clean_latent_frames"], 5, 6, -1, 7, -1, seed=5000,
                                        num_denoising_steps_future_state=3, use_ensemble_future_state_predictions=True,
                                        num_future_state_predictions_in_ensemble=3, future_state_ensemble_aggregation_scheme="average")
    value = cu.get_value_prediction(cfg, model, r["data_batch"], fs["future_state_samples_list"], seed=5000, num_denoising_steps_value=2,
                                    use_ensemble_value_predictions=True, num_value_predictions_in_ensemble=2)["value_prediction"]
    assert served.predicted_value == pytest.approx(value, abs=1e-6)
    assert np.array_equal(served.predicted_future["agentview"], fs["future_image_predictions"]["future_image"])
    assert np.array_equal(served.actions, np.stack(r["actions"]))


def test_a_planning_model_plays_world_model_and_value(cu, cosmos_files):
    url = serve_in_thread(cosmos_files, "--cosmos-planning-ckpt", str(cosmos_files / "model.pt"), "--cosmos-planning-config", "planning_experiment")
    assert "+planning:model.pt@" in probe(url)["policy"]["version"]
    client = RemotePolicy(server=url, n_values=2)
    client.reset(TASK0, seed=1, mode="planning", n_candidates=1, aggregation="average")
    cu.LOG.clear()
    client.act(observation())
    client.close()
    assert [c["model"] for c in cu.LOG if c["call"] == "generate"] == ["base", "planning", "planning", "planning"]


def test_joint_value_planning(cu, cosmos_files):
    url = serve_in_thread(cosmos_files, "--cosmos-set", "ar_future_prediction=false", "--cosmos-set", "ar_value_prediction=false")
    client = RemotePolicy(server=url)
    client.reset(TASK0, seed=1, mode="planning", n_candidates=2, aggregation="average")
    cu.LOG.clear()
    decision = client.act(observation())
    client.close()
    assert [c["seed"] for c in cu.LOG] == [1000, 1001] and decision.info["value_source"] == "joint"
    assert all(len(c.ensemble_values) == 1 and c.ensemble_values[0] == c.predicted_value for c in decision.candidates)


# --- refusals and crashes: errors, never task failures ----------------------------------------------------------
def test_t5_cache_miss_is_refused_without_loading_t5(cu, cosmos_files):
    url = serve_in_thread(cosmos_files)
    before = (cosmos_files / "t5.pkl").read_bytes()
    client = RemotePolicy(server=url)
    with pytest.raises(ServerError, match=r"bad_request: UserError: instruction 'pick up the black bowl and place it on the plate' \(at reset\) is not in the T5.*"
                                          r"or start the server with --cosmos-t5-encoder PATH"):
        client.reset("pick up the black bowl and place it on the plate", seed=0, mode="direct")
    client.reset(TASK0, seed=0, mode="direct")
    with pytest.raises(ServerError, match="at a decision"):  # a paraphrase mid-episode: refused too
        client.act(observation(instruction="grab the bowl"))
    client.close()
    assert cu.T5_LOADS == [] and (cosmos_files / "t5.pkl").read_bytes() == before and not (cosmos_files / "t5.pkl.backup").exists()


def test_t5_encoder_flag_without_transformers_or_weights_exits_2(cosmos_files, tmp_path):
    """--cosmos-t5-encoder: one line at start when transformers is missing from the server's environment, or when
    the folder holds no saved encoder."""
    try:
        import transformers  # noqa: F401
        says = f"--cosmos-t5-encoder {str(tmp_path)!r} holds no config.json"
    except ImportError:
        says = "--cosmos-t5-encoder needs transformers in the server's Python environment"
    with pytest.raises(Exception, match=re.escape(says)):
        serve_in_thread(cosmos_files, "--cosmos-t5-encoder", str(tmp_path))


def test_t5_encoder_embeds_an_instruction_outside_the_cache(cu, cosmos_files, tmp_path):
    """With a T5 encoder saved locally (a tiny randomly initialised one of T5-11B's width, built here: no download),
    a new instruction is embedded by the server (last hidden state over 512 tokens, padding zeroed), served, and
    the cache file is untouched; Cosmos's own T5-11B path is never taken. Runs where transformers is installed."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    torch = pytest.importorskip("torch")
    words = ["<pad>", "</s>", "<unk>", *sorted(set((TASK0 + " grab the bowl please").split()))]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(words), d_model=1024, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    transformers.T5EncoderModel(config).save_pretrained(tmp_path)
    before = (cosmos_files / "t5.pkl").read_bytes()
    url = serve_in_thread(cosmos_files, "--cosmos-t5-encoder", str(tmp_path))
    told = "grab the bowl please"
    client = RemotePolicy(server=url)
    client.reset(told, seed=0, mode="direct")
    assert "instructions" not in client.metadata  # any instruction can be embedded: no list to refuse tasks by
    decision = client.act(observation(instruction=told))
    client.close()
    assert decision.actions.shape[0] >= 1 and cu.T5_LOADS == [] and (cosmos_files / "t5.pkl").read_bytes() == before
    stored = np.asarray(cu.t5_text_embeddings_cache[told].data)
    assert stored.shape == (1, 512, 1024) and stored.dtype == np.float32
    assert np.abs(stored[0, :4]).sum() > 0 and not stored[0, 4:].any()  # its 4 words, then the padding zeroed
    encoder = transformers.T5EncoderModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        direct = encoder(input_ids=torch.tensor([[words.index(w) for w in told.split()]])).last_hidden_state.numpy()
    assert np.allclose(stored[0, :4], direct[0], atol=1e-4)


def test_run_refuses_a_task_outside_the_t5_cache_before_any_episode(cu, cosmos_files, tmp_path):
    (tmp_path / "t5.pkl").write_bytes(pickle.dumps({OTHER: np.zeros((1, 512, 1024), np.float32)}))
    # a process of its own: the T5 cache is a module global of cosmos_utils, shared by in-process servers
    server = start_cosmos_server(cosmos_files, "--cosmos-t5-embeddings", str(tmp_path / "t5.pkl"))
    try:
        url = _address(server)
        assert probe(url)["instructions"] == [OTHER]
        proc = run_cli("run", "--policy", "remote", "--policy-server", url, "--mode", "direct", "--episodes", "1", "--max-steps", "16",
                       "--out", str(tmp_path / "out"), timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert_user_error(proc, repr(TASK0), "not among its 1 cached instructions")
    assert not (tmp_path / "out").exists()  # nothing ran


def test_bad_requests_and_crashing_combinations_are_error_replies(cu, cosmos_files):
    url = serve_in_thread(cosmos_files)
    small = observation(size=128)
    replies = raw_session(
        url,
        {"type": "reset", "instruction": TASK0, "seed": 0, "mode": "direct"},
        {"type": "act", **wire(small)},  # the suite's 128 px default: Cosmos's LIBERO renders are 256
        {"type": "reset", "instruction": TASK0, "seed": 0, "mode": "planning", "n_candidates": 2, "aggregation": "average",
         "settings": {"ar_future_prediction": False}},  # AR value without AR future: Cosmos's loop raises NameError
        {"type": "reset", "instruction": TASK0, "seed": 0, "mode": "planning", "n_candidates": 2, "aggregation": "average",
         "settings": {"ar_qvalue_prediction": True}},
        {"type": "reset", "instruction": TASK0, "seed": 0, "mode": "planning", "n_candidates": 2, "aggregation": "mode"},
        {"type": "reset", "instruction": TASK0, "seed": 0, "mode": "planning", "n_candidates": 2, "aggregation": "gamma_weighted_average",
         "settings": {"n_values": 2}},
        {"type": "plan", **wire(observation()), "n_candidates": 2, "aggregation": "gamma_weighted_average", "settings": {"n_values": 2}},
        {"type": "reset", "instruction": TASK0, "seed": 0, "mode": "direct"},
        {"type": "act", **wire(observation())},  # the connection is still usable after all that
    )
    kinds = [(r["type"], r.get("kind")) for r in replies]
    assert kinds == [("ready", None), ("error", "bad_request"), ("error", "bad_request"), ("error", "bad_request"), ("error", "bad_request"),
                     ("ready", None), ("error", "policy_error"), ("ready", None), ("decision", None)], kinds
    assert "(128, 128, 3)" in replies[1]["message"] and "256" in replies[1]["message"]
    assert "NameError" in replies[2]["message"] and "ar_qvalue_prediction" in replies[3]["message"] and "'mode'" in replies[4]["message"]
    assert replies[6]["error"] == "ValueError" and "gamma_weighted_average" in replies[6]["message"]  # raised by Cosmos's aggregation
    assert "aggregate_value_predictions" in replies[6]["traceback"]


def test_stress_run_against_the_cosmos_server(served_cosmos, tmp_path):
    """Through `stress run --policy remote`: planning, served with a combination Cosmos's loop crashes on, is refused
    by the pre-run inference check (exit 2, the server's one line, no run folder); one short real LIBERO episode in
    direct mode runs, its predicted futures measured."""
    from stress.envs import simulator_of
    from stress.store import RunStore

    assert simulator_of("libero_spatial").tasks("libero_spatial")[0] == TASK0
    common = ("run", "--policy", "remote", "--policy-server", served_cosmos, "--episodes", "1", "--max-steps", "16", "--no-baseline")
    refused = run_cli(*common, "--mode", "both", "--candidates", "2", "--out", str(tmp_path / "both"), timeout=600)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "failed the inference check" in refused.stderr and "settings ar_value_prediction true with ar_future_prediction false" in refused.stderr
    assert not (tmp_path / "both").exists() or not any((tmp_path / "both").iterdir())
    proc = run_cli(*common, "--mode", "direct", "--out", str(tmp_path / "direct"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    store = RunStore.open(next((tmp_path / "direct").iterdir()))
    rows = store.query("SELECT mode, error, success, steps FROM episodes")
    assert len(rows) == 1 and rows[0]["error"] is None and rows[0]["steps"] == 16, rows
    assert store.manifest["config"]["policy_server"]["policy"]["name"] == "cosmos-policy"
    # the direct decision's predicted futures measured against the simulator's, both in the model's view
    rows = store.query("SELECT future_psnr, future_ssim_agentview FROM decisions")
    assert len(rows) == 1 and np.isfinite(rows[0]["future_psnr"]) and 0 < rows[0]["future_ssim_agentview"] <= 1, rows
    assert store.manifest["config"]["policy_server"]["image_size"] == 256


# --- the real repository's code on a CPU with a fake network, when a checkout is available -----------
def test_real_cosmos_utils_on_cpu_with_a_fake_network(tmp_path):
    checkout = os.environ.get("COSMOS_POLICY_CHECKOUT")
    python = os.environ.get("COSMOS_POLICY_PYTHON", sys.executable)
    if not checkout:
        pytest.skip("set COSMOS_POLICY_CHECKOUT to a cosmos-policy checkout (and COSMOS_POLICY_PYTHON to a Python that imports it)")
    probe_script = ROOT / "tests" / "cosmos_cpu_probe.py"
    proc = subprocess.run([python, str(probe_script), checkout, str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), checkout])})
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["stand_in_mismatches"] == []  # tests/fake_cosmos honours the real signatures and return types
    assert report["direct"]["actions_shape"] == [16, 7] and report["direct"]["future_shape"] == [224, 224, 3]
    plan = report["planning"]
    assert plan["ensemble_shape"] == [2, 4] and plan["seeds"] == [4000, 4001]  # 2 futures x 2 values per candidate
    assert plan["values"][0] == pytest.approx(plan["cosmos_ensemble_value"], abs=1e-6) and plan["actions_equal"]
    # per candidate i: the action sample, 2 futures (seed + k), 2 values per future (seed + j), each role with its conditioning
    expected = [call for i in range(2) for call in [(4000 + i, 5, 4), (4000 + i, 1, 5), (4001 + i, 1, 5)] + [(4000 + i + j, 1, 8) for _ in range(2) for j in range(2)]]
    assert [(c["seed"], c["num_steps"], c["ncf"]) for c in plan["calls"]] == expected


def test_a_language_rewrite_outside_the_t5_cache_is_a_clear_episode_error(served_cosmos, tmp_path):
    """The language family tells the served Cosmos another instruction: without its cached T5 embedding the server
    refuses it at reset (no T5-11B load), and the run stores that refusal as the episode's error."""
    from stress.store import RunStore

    proc = run_cli("run", "--policy", "remote", "--policy-server", served_cosmos, "--mode", "direct", "--episodes", "1",
                   "--max-steps", "16", "--no-baseline", "--perturb", "language:1", "--out", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    store = RunStore.open(next(tmp_path.iterdir()))
    (row,) = store.query("SELECT error, success, perturbations FROM episodes")
    told = json.loads(row["perturbations"])[0]["realisation"]["instruction"]
    assert told != TASK0 and not row["success"]
    assert row["error"].startswith(f"policy_server_error: bad_request: UserError: instruction {told!r} (at reset) is not in the T5 embeddings cache"), row
