"""Round-trip overhead of a policy server against an in-process call (``stress bench --remote``), and episodes
per hour with one policy server feeding two simulator workers, for each wire (``stress bench --remote-throughput``).

The served policy is a canned best-of-8 decision (8 candidates, each with a 16 x 7 chunk, two predicted
future images at the built-in model's size and 15 raw ensemble values), so the figure is the protocol's cost
alone: encoding two 256 px camera images and the proprio, the websocket round trip on 127.0.0.1, decoding,
and validating the reply. The server runs in its own process (``python -m stress.bench.remote PORT``), as a
real one would: a thread here would share the interpreter lock with the client.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import json_numpy
import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

from stress.core.policy import Candidate, Decision, Observation
from stress.core.spec import ScenarioSpec
from stress.measurement.groundtruth import Measurement
from stress.policies import cosmos_deploy, openpi
from stress.policies.cosmos_deploy import CosmosDeployPolicy
from stress.policies.openpi import OpenpiPolicy
from stress.policies.remote import RemotePolicy, probe, served_id
from stress.policies.serve import PolicyServer, describe
from stress.runners.local import LocalRunner
from stress.runners.preflight import first_observation
from stress.store import RunStore

IMAGE_SIZE, CANDIDATES, FUTURE_SIZE, ENSEMBLE = 256, 8, 128, 15
WIRE_IMAGE_SIZE, WIRE_CHUNK = 224, 10  # --wires: the request (two 224 px images, an 8-D state) and reply (a 10 x 7 chunk)


class CannedPlanner:
    """Always the same best-of-8 decision (seeded random content: realistic bytes, no compute)."""

    name, modes, uses_images = "canned", ("direct", "planning"), True

    def __init__(self):
        rng = np.random.default_rng(0)
        futures = lambda: {c: rng.integers(0, 256, (FUTURE_SIZE, FUTURE_SIZE, 3), dtype=np.uint8) for c in ("agentview", "wrist")}
        self.candidates = [Candidate(actions=rng.uniform(-1, 1, (16, 7)), predicted_value=float(rng.uniform()), predicted_future=futures(),
                                     seed=i, ensemble_values=rng.uniform(0, 1, ENSEMBLE)) for i in range(CANDIDATES)]

    def reset(self, instruction, seed, mode="direct", n_candidates=1, aggregation=None):
        pass

    def act(self, obs) -> Decision:
        best = self.candidates[0]
        return Decision(actions=best.actions, predicted_value=best.predicted_value, predicted_future=best.predicted_future,
                        candidates=self.candidates, chosen=0, aggregation="average", info={"seed": 0})


def _observation() -> Observation:
    rng = np.random.default_rng(1)
    images = {c: rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for c in ("agentview", "wrist")}
    return Observation(images=images, proprio=rng.normal(size=9), instruction="pick up the black bowl", step=0)


def _median_ms(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def measure(repeats: int = 200) -> dict:
    obs, local = _observation(), CannedPlanner()
    local.reset("", 0, mode="planning", n_candidates=CANDIDATES, aggregation="average")
    in_process = _median_ms(lambda: local.act(obs), repeats)
    proc = subprocess.Popen([sys.executable, "-m", "stress.bench.remote", "0"], stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        url = re.search(r"ws://[\d.]+:\d+", proc.stderr.readline()).group(0)
        remote = RemotePolicy(server=url)
        remote.reset("pick up the black bowl", 0, mode="planning", n_candidates=CANDIDATES, aggregation="average")
        for _ in range(10):  # warm-up
            remote.act(obs)
        over_socket = _median_ms(lambda: remote.act(obs), repeats)
        remote.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    request_bytes = sum(i.nbytes for i in obs.images.values())
    return {"repeats": repeats, "in_process_ms": in_process[0], "socket_ms_median": over_socket[0], "socket_ms_p95": over_socket[1],
            "overhead_ms": over_socket[0] - in_process[0], "request_image_bytes": request_bytes}


ROOT = Path(__file__).resolve().parents[2]
DEPLOY_STAND_IN = ROOT / "tests" / "deploy_server.py"  # deploy.py's contract, the stand-in model the tests use
ALOHA_MAX_STEPS = 100  # the cosmos-deploy side's step budget (two of deploy.py's 50-step chunks): kept small


def _serve(command: list[str]) -> tuple[subprocess.Popen, str]:
    """A policy server in its own process, ``command`` printing its address on stderr; (process, URL)."""
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    for line in proc.stderr:
        match = re.search(r"(ws|http)://[\d.]+:\d+", line)
        if match:  # keep reading its stderr so a chatty server never blocks on a full pipe
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, match.group(0)
    proc.wait(timeout=10)
    raise RuntimeError(f"{' '.join(command[:4])} exited with {proc.returncode} before listening")


def _serve_reference(wire: str = "stress") -> tuple[subprocess.Popen, str]:
    """``stress serve --policy reference --port 0 --wire WIRE`` in its own process; (process, ws URL)."""
    return _serve([sys.executable, "-m", "stress.cli", "serve", "--policy", "reference", "--port", "0", "--wire", wire])


def _sides(suite: str, task: int, max_steps: int | None) -> dict:
    """Each side of the throughput benchmark: (server command or None, policy, suite, task, image size, step budget,
    the options from the server's URL)."""
    def deploy_options(url):
        first = ScenarioSpec(suite="aloha", task_id=0, init_index=0, policy="cosmos-deploy", image_size=cosmos_deploy.RENDER_SIZE)
        return (("served", cosmos_deploy.probe(url, first_observation(first)[0])["served"]), ("server", url))

    openpi_mapping = openpi.mapping_of("libero")
    return {
        "in_process": (None, "reference", suite, task, 128, max_steps, lambda url: ()),
        "served": (lambda: _serve_reference(), "remote", suite, task, 128, max_steps, lambda url: (("served", served_id(probe(url))), ("server", url))),
        "openpi": (lambda: _serve_reference("openpi"), "openpi", suite, task, openpi_mapping.render_size, max_steps,
                   lambda url: (("replan_steps", openpi_mapping.replan_steps), ("served", openpi.served_id(openpi.probe(url))), ("server", url))),
        "cosmos_deploy": (lambda: _serve([sys.executable, str(DEPLOY_STAND_IN), "--port", "0", "--reply", "direct"]), "cosmos-deploy", "aloha", 0,
                          cosmos_deploy.RENDER_SIZE, min(max_steps or ALOHA_MAX_STEPS, ALOHA_MAX_STEPS), deploy_options),
    }


THROUGHPUT_SIDES = ("in_process", "served", "openpi", "cosmos_deploy")


def throughput(episodes: int = 10, workers: int = 2, suite: str = "libero_spatial", task: int = 0, max_steps: int | None = None,
               sides: tuple[str, ...] = THROUGHPUT_SIDES) -> dict:
    """Episodes per hour of ``workers`` simulator processes fed by one policy server process, for each wire, against
    the same workers each running the model in-process (``stress bench --only throughput``).

    ``in_process`` and ``served`` (stress-policy/1, ``stress serve --policy reference``) run the same ``episodes``
    clean direct episodes (init states 0..episodes-1, seed 0, 128 px, no ground-truth measurement), the same work
    (not bit for bit here: the server's torch threads differ from a worker's; docs/benchmarks.md). ``openpi`` runs them against ``stress serve
    --policy reference --wire openpi`` through the ``openpi`` client (256 px renders, the first 5 actions of each
    chunk executed: more decisions per episode). ``cosmos_deploy`` runs ALOHA (transfer_cube, ``ALOHA_MAX_STEPS``
    steps) through the ``cosmos-deploy`` client against the deploy.py stand-in the tests use (its direct reply:
    the sent joint positions held for 50 steps; three 256 px renders per decision). A warm-up episode per worker
    (1 step) first starts the pool, builds each worker's scene and loads the model (``startup_s``);
    ``episodes_per_hour`` is then the timed episodes over their wall-clock time."""
    results = {}
    for name in sides:
        start_server, policy, side_suite, side_task, size, steps, options_of = _sides(suite, task, max_steps)[name]
        proc, url = start_server() if start_server else (None, None)
        try:
            policy_options = options_of(url)
            with tempfile.TemporaryDirectory() as tmp:
                spec = lambda init, budget: ScenarioSpec(suite=side_suite, task_id=side_task, init_index=init, policy=policy, max_steps=budget,
                                                         image_size=size, policy_options=policy_options)
                warm_up, specs = [spec(i, 1) for i in range(workers)], [spec(i, steps) for i in range(episodes)]
                store = RunStore.create(Path(tmp), name, warm_up + specs, {})
                with LocalRunner(workers) as runner:
                    started = time.perf_counter()
                    runner.run(warm_up, store, measurement=Measurement("none", 0))
                    startup = time.perf_counter() - started
                    started = time.perf_counter()
                    runner.run(specs, store, measurement=Measurement("none", 0))
                    wall = time.perf_counter() - started
                keys = ", ".join(f"'{s.key}'" for s in specs)
                rows = store.query(f"SELECT success, error, steps, decisions, wall_s, policy_s FROM episodes WHERE episode_key IN ({keys})")
                decisions = int(sum(r["decisions"] for r in rows))
                results[name] = {"suite": side_suite, "episodes": len(rows), "successes": sum(bool(r["success"]) for r in rows),
                                 "errors": sum(r["error"] is not None for r in rows), "steps": int(sum(r["steps"] for r in rows)), "decisions": decisions,
                                 "startup_s": startup, "wall_s": wall, "episodes_per_hour": 3600 * len(rows) / wall,
                                 "mean_episode_s": float(np.mean([r["wall_s"] for r in rows])),
                                 "policy_ms_per_decision": 1000 * sum(r["policy_s"] for r in rows) / max(1, decisions)}
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    return {"workers": workers, "suite": suite, "task": task, "max_steps": max_steps, "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0], **results}


class CannedChunk:
    """Always the same 10 x 7 chunk, direct mode: what an actions-only policy sends on either wire."""

    name, modes, uses_images = "canned-chunk", ("direct",), True

    def __init__(self):
        self.actions = np.random.default_rng(0).uniform(-1, 1, (WIRE_CHUNK, 7))

    def reset(self, instruction, seed, mode="direct", n_candidates=1, aggregation=None):
        pass

    def act(self, obs) -> Decision:
        return Decision(actions=self.actions)


class CannedDeploy(BaseHTTPRequestHandler):
    """deploy.py's wire with a canned direct reply (``stress bench --wires``): the request decoded with json_numpy as
    deploy.py's FastAPI app does, the reply its direct configuration's: a 50 x 14 chunk as a list of rows, a value
    and three 224 px future images."""

    reply = b""  # set once the server starts (``main``): encoded once, sent to every request

    @staticmethod
    def encoded_reply() -> bytes:
        rng = np.random.default_rng(2)
        return json_numpy.dumps({"actions": list(rng.uniform(-1, 1, (50, cosmos_deploy.ACTION_DIM)).astype(np.float32)), "value_prediction": 0.5,
                                 "future_image_predictions": {k: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for k in cosmos_deploy.FUTURES}}).encode()

    def log_message(self, *args):
        pass

    def do_POST(self):
        json_numpy.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.reply)))
        self.end_headers()
        self.wfile.write(self.reply)


def _serve_wire(wire: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "stress.bench.remote", "0", wire], stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    return proc, re.search(r"(ws|http)://[\d.]+:\d+", proc.stderr.readline()).group(0)


def wires(repeats: int = 200) -> dict:
    """Round trip per decision on 127.0.0.1 for each wire, a canned 10 x 7 chunk served in its own process
    (``stress bench --wires``): stress-policy/1 through the ``remote`` backend (two 224 px images, the 9-D
    proprio); openpi's protocol through openpi-client's own ``WebsocketClientPolicy.infer`` (two 224 px images,
    the 8-D state) and through the ``openpi`` backend (two 256 px renders resized to 224 as openpi's LIBERO
    client does, then the same request); deploy.py's HTTP + json_numpy wire through the ``cosmos-deploy`` backend
    (ALOHA: three 256 px renders resized to 224, the 14-D proprio; deploy.py's direct reply, ``CannedDeploy``)."""
    rng = np.random.default_rng(1)
    obs224 = Observation(images={c: rng.integers(0, 256, (WIRE_IMAGE_SIZE, WIRE_IMAGE_SIZE, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                         proprio=rng.normal(size=9), instruction="pick up the black bowl", step=0)
    obs256 = Observation(images={c: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                         proprio=rng.normal(size=9), instruction="pick up the black bowl", step=0)
    openpi_obs = {"observation/image": obs224.images["agentview"], "observation/wrist_image": obs224.images["wrist"],
                  "observation/state": rng.normal(size=8), "prompt": "pick up the black bowl"}
    results = {"repeats": repeats, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}

    def timed(key, fn):
        for _ in range(10):  # warm-up
            fn()
        median, p95 = _median_ms(fn, repeats)
        results[key] = {"median_ms": median, "p95_ms": p95}

    aloha256 = Observation(images={c: rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for c in cosmos_deploy.CAMERAS},
                           proprio=rng.normal(size=14), instruction="insert the peg into the socket", step=0)
    for wire in ("stress", "openpi", "deploy"):
        proc, url = _serve_wire(wire)
        try:
            if wire == "deploy":
                deploy = CosmosDeployPolicy(server=url)
                deploy.reset("insert the peg into the socket", 0)
                timed("deploy.py (cosmos-deploy backend, three 256 px renders resized to 224)", lambda: deploy.act(aloha256))
            elif wire == "stress":
                client = RemotePolicy(server=url)
                client.reset("pick up the black bowl", 0)
                timed("stress-policy/1 (remote backend)", lambda: client.act(obs224))
                client.close()
            else:
                host, port = url.removeprefix("ws://").split(":")
                theirs = WebsocketClientPolicy(host, int(port))
                timed("openpi (openpi-client's infer)", lambda: theirs.infer(openpi_obs))
                ours = OpenpiPolicy(server=url)
                ours.reset("pick up the black bowl", 0)
                timed("openpi (openpi backend, 256 px renders resized to 224)", lambda: ours.act(obs256))
                ours.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return results


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 2 and sys.argv[2] == "deploy":  # deploy.py's wire: its canned direct reply
        CannedDeploy.reply = CannedDeploy.encoded_reply()
        server = ThreadingHTTPServer(("127.0.0.1", port), CannedDeploy)
        print(f"bench server on http://127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
        server.serve_forever()
        return
    if len(sys.argv) > 2:  # a wire: the canned 10 x 7 chunk of `stress bench --wires`
        metadata = describe(CannedChunk, version="bench", chunk=WIRE_CHUNK, image_size=WIRE_IMAGE_SIZE)
        server = PolicyServer(CannedChunk, metadata, port=port, observation_type=Observation, wire=sys.argv[2])
        server.serve_forever(ready=lambda p: print(f"bench server on ws://127.0.0.1:{p}", file=sys.stderr, flush=True))
        return
    metadata = describe(CannedPlanner, version="bench", chunk=16, image_size=IMAGE_SIZE, aggregations=("average",),
                        predictions=("value", "future_images", "candidates", "ensemble_values"))
    server = PolicyServer(CannedPlanner, metadata, port=port, observation_type=Observation)
    server.serve_forever(ready=lambda p: print(f"bench server on ws://127.0.0.1:{p}", file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
