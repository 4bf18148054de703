"""A real HTTP server honouring Cosmos Policy's ALOHA deploy.py contract field for field (NVlabs/cosmos-policy
18a2acc, ``cosmos_policy/experiments/robot/aloha/deploy.py``), with the standard library's http.server and json_numpy
in place of FastAPI and its patched json: ``POST /act``; the body is the observation or ``{"encoded": json}``
(then the reply is double-encoded, a JSON string holding the JSON); the reply is ``actions`` (a list of chunk x 14
float32 arrays), ``future_image_predictions`` (``future_image``, ``future_wrist_image``, ``future_wrist_image2``,
224 x 224 uint8), ``value_prediction``, and with ``return_all_query_results`` the ``all_*`` lists; a request it
fails on gets the JSON string "error" with status 200, as deploy.py's bare ``except`` returns.

The "model" is a deterministic stand-in: query i holds the sent proprio (14 joint targets) with joint 0 moved by
0.001 i, values fall with i except query 2's, which wins best-of-N by deploy.py's rule (the base seed's unless a
strictly higher value); the futures are the sent images. ``--reply`` breaks the contract on purpose (the pre-run
check's tests); ``--die-after K`` exits the process after K answered requests (a server lost mid-run).

    python tests/deploy_server.py --port 0 [--queries N] [--reply planning|direct|actions|no-actions|wrong-shape|nan]
                                  [--die-after K] [--log FILE]

It prints ``http://127.0.0.1:PORT`` on stderr once listening. ``--log`` appends one JSON line per request: the
sha256 of the bytes it received for each image and the proprio, and the actions it returned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import json_numpy
import numpy as np

IMAGES = ("primary_image", "left_wrist_image", "right_wrist_image")
CHUNK, ACTION_DIM, SIZE = 50, 14, 224


def answer(observation: dict, queries: int, reply: str) -> tuple[object, dict]:
    """deploy.py's get_server_action on a decoded observation: (the response, the log record)."""
    task = observation["task_description"]
    assert isinstance(task, str) and task
    images = {k: np.array(observation[k], dtype=np.uint8) for k in IMAGES}
    proprio = np.array(observation["proprio"], dtype=np.float32)
    assert all(image.shape == (SIZE, SIZE, 3) for image in images.values()) and proprio.shape == (ACTION_DIM,)
    return_all = bool(observation.get("return_all_query_results", False))
    results = []
    for i in range(max(1, queries)):
        chunk = np.tile(proprio, (CHUNK, 1))
        chunk[:, 0] += 0.001 * i
        value = 0.9 if i == 2 else 0.5 - 0.01 * i
        futures = {"future_wrist_image": images["left_wrist_image"], "future_wrist_image2": images["right_wrist_image"],
                   "future_image": images["primary_image"]}
        results.append(([chunk[j] for j in range(CHUNK)], futures, float(value)))
    best = 0
    top = max(range(len(results)), key=lambda i: results[i][2])
    if results[top][2] > results[0][2]:
        best = top
    actions, futures, value = results[best]
    if reply == "actions":
        response: object = actions
    else:
        response = {"actions": actions, "future_image_predictions": futures, "value_prediction": value}
        if return_all:
            response.update(all_actions=[r[0] for r in results], all_future_image_predictions=[r[1] for r in results],
                            all_value_predictions=[r[2] for r in results], all_actions_by_depth=[[r[0]] for r in results],
                            all_future_image_predictions_by_depth=[[r[1]] for r in results], all_value_predictions_by_depth=[[r[2]] for r in results])
        if reply == "no-actions":
            response.pop("actions")
        elif reply == "wrong-shape":
            response["actions"] = [a[:7] for a in actions]
        elif reply == "nan":
            response["actions"] = [np.full(ACTION_DIM, np.nan, np.float32) for _ in actions]
    record = {"images": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in images.items()},
              "proprio": hashlib.sha256(np.asarray(observation["proprio"]).tobytes()).hexdigest(), "return_all": return_all,
              "actions": np.stack(actions).tolist()}
    return response, record


class Handler(BaseHTTPRequestHandler):
    server_version = "uvicorn"

    def log_message(self, *args):
        pass

    def do_POST(self):
        if self.path != "/act":
            self.send_error(404, "Not Found")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        config = self.server.config
        try:
            payload = json_numpy.loads(body)
            double = "encoded" in payload
            if double:
                assert len(payload) == 1, "Only uses encoded payload!"
                payload = json_numpy.loads(payload["encoded"])
            response, record = answer(payload, config.queries, config.reply)
            out = json_numpy.dumps(json_numpy.dumps(response) if double else response)
        except Exception:  # deploy.py: logs the traceback, returns "error"
            out, record = json.dumps("error"), None
        data = out.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        with self.server.lock:
            if record is not None and config.log:
                with open(config.log, "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.server.answered += 1
            if config.die_after and self.server.answered >= config.die_after:
                os._exit(0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8777)
    parser.add_argument("--queries", type=int, default=1)
    parser.add_argument("--reply", default="planning", choices=("planning", "direct", "actions", "no-actions", "wrong-shape", "nan"))
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--log")
    config = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", config.port), Handler)
    server.config, server.lock, server.answered = config, threading.Lock(), 0
    print(f"http://127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
