"""Cosmos Policy's *real* ALOHA deploy.py (FastAPI, uvicorn, json_numpy, the real cosmos_utils) served on a CPU with
a fake network in place of the 2B model, for tests/test_cosmos_deploy.py's optional test (COSMOS_POLICY_CHECKOUT
and COSMOS_POLICY_PYTHON set), or by hand:

    PYTHONPATH=.:CHECKOUT COSMOS_POLICY_PYTHON tests/cosmos_deploy_probe.py CHECKOUT WORKDIR LOG [--queries N] aloha

deploy.py is imported from the checkout and run unmodified (``PolicyServer(cfg).run``); only what it imports is
replaced: ``get_model`` (the fake network: seeded random latents with ALOHA's frame count, a decode of the right
shape), CUDA (``Tensor.cuda`` a no-op) and the checkpoint's files (statistics, a T5 cache of the one
instruction). Each request's received image and proprio bytes (sha256) and the actions it returned are appended
to LOG as JSON lines, by a wrapper around ``get_server_action`` (the function FastAPI calls). Prints
``http://127.0.0.1:PORT`` on stderr when the server is about to listen. The word "aloha" must be on the command
line: Cosmos's constants pick ALOHA's 14-D actions from ``sys.argv``. Exits 77 when the checkout's code cannot be
imported by this Python.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

from cosmos_cpu_probe import import_cosmos_utils

from stress.envs.aloha import (
    INSTRUCTIONS,  # the T5 cache holds the suite's ALOHA instructions (a miss would load T5-11B)
)

LATENT_FRAMES = 11  # ALOHA: blank, proprio, left wrist, right wrist, primary, action, their futures (4), value


def main(checkout: str, work: Path, log: Path, queries: int) -> None:
    try:
        cu = import_cosmos_utils(checkout)
        from cosmos_policy.experiments.robot.aloha import deploy
    except ImportError as exc:
        print(f"cosmos-policy's deploy.py not importable here: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(77)
    import json_numpy
    import numpy as np
    import torch

    assert cu.ACTION_DIM == 14, cu.ACTION_DIM
    torch.Tensor.cuda = lambda self, *args, **kwargs: self

    class FakeNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(state_t=LATENT_FRAMES, min_num_conditional_frames=5)

        def generate_samples_from_batch(self, data_batch, n_sample=1, num_steps=35, seed=1, is_negative_prompt=False, use_variance_scale=False,
                                        skip_vae_encoding=False, previous_generated_latent=None, return_orig_clean_latent_frames=False, **kwargs):
            ncf = data_batch["num_conditional_frames"]
            latent = torch.rand((n_sample, 16, LATENT_FRAMES, 28, 28), generator=torch.Generator().manual_seed(seed)) * 2 - 1
            if previous_generated_latent is not None:
                latent[:, :, :ncf] = previous_generated_latent[:, :, :ncf]
            return (latent, torch.zeros_like(latent)) if return_orig_clean_latent_frames else latent

        def decode(self, sample):
            frames = sample[:, :3].mean(dim=(3, 4), keepdim=True)
            frames = torch.cat([frames[:, :, :1]] + [frames[:, :, t:t + 1].expand(-1, -1, 4, -1, -1) for t in range(1, LATENT_FRAMES)], dim=2)
            return frames.expand(-1, -1, -1, 224, 224).clamp(-1, 1)

    net = FakeNet()
    config = SimpleNamespace(dataloader_train=SimpleNamespace(dataset=SimpleNamespace(chunk_size=50)))
    deploy.get_model = lambda cfg: (net, config)
    deploy.get_planning_model = lambda cfg: (net, config)

    work.mkdir(parents=True, exist_ok=True)
    stats = {"actions_min": [-1.5] * 14, "actions_max": [1.5] * 14, "proprio_min": [-1.5] * 14, "proprio_max": [1.5] * 14}
    (work / "stats.json").write_text(json.dumps(stats))
    with open(work / "t5.pkl", "wb") as f:
        pickle.dump({i: torch.randn(1, 512, 1024, generator=torch.Generator().manual_seed(n)) for n, i in enumerate(INSTRUCTIONS.values())}, f)
    planning = queries > 1
    cfg = deploy.DeployConfig(ckpt_path=str(work / "model.pt"), dataset_stats_path=str(work / "stats.json"), t5_text_embeddings_path=str(work / "t5.pkl"),
                              host="127.0.0.1", ar_future_prediction=planning, ar_value_prediction=planning, num_queries_best_of_n=queries,
                              num_denoising_steps_action=2, use_ensemble_value_predictions=planning, num_value_predictions_in_ensemble=2,
                              value_ensemble_aggregation_scheme="majority_mean")
    server = deploy.PolicyServer(cfg)
    original = server.get_server_action

    @functools.wraps(original)
    def logged(payload):
        seen = json.loads(payload["encoded"]) if "encoded" in payload else payload
        record = {k: hashlib.sha256(np.asarray(seen[k]).tobytes()).hexdigest() for k in ("primary_image", "left_wrist_image", "right_wrist_image")}
        record["proprio"] = hashlib.sha256(np.asarray(seen["proprio"]).tobytes()).hexdigest()
        response = original(payload)
        body = json_numpy.loads(response.body) if hasattr(response, "body") else None
        record["actions"] = np.stack(body["actions"]).tolist() if isinstance(body, dict) else None
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
        return response

    server.get_server_action = logged
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.run("127.0.0.1", port=port)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "aloha"]
    queries = int(args[args.index("--queries") + 1]) if "--queries" in args else 1
    main(args[0], Path(args[1]), Path(args[2]), queries)
