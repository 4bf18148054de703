"""The Cosmos Policy server against the *real* cosmos-policy code on a CPU, with a fake network in place of the
2B model. Run by tests/test_cosmos_server.py when COSMOS_POLICY_CHECKOUT is set, or by hand:

    HF_HUB_OFFLINE=1 PYTHONPATH=.:CHECKOUT python tests/cosmos_cpu_probe.py CHECKOUT WORKDIR

What is real: cosmos_utils' get_action (image preprocessing, JPEG, crop, proprio scaling, the data_batch,
action and value extraction, un-normalisation), get_future_state_prediction, get_value_prediction,
aggregate_value_predictions, load_dataset_stats and the T5 cache loader. What is faked: the network
(``FakeNet``: seeded random latents, a decode of the right shape) and CUDA (``Tensor.cuda`` is a no-op).
Prints a JSON report as its last line; exits 77 when cosmos_utils cannot be imported by this Python.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import threading
import types
from pathlib import Path
from types import SimpleNamespace

INSTRUCTION = "put both the alphabet soup and the tomato sauce in the basket"


def import_cosmos_utils(checkout: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, checkout)
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        # a CPU torch with PyPI's CUDA torchvision: its C ops do not load; cosmos_utils needs only
        # transforms.functional, so skip the ops' meta registrations
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    from cosmos_policy.experiments.robot import cosmos_utils

    return cosmos_utils


def main(checkout: str, work: Path) -> dict:
    try:
        cu = import_cosmos_utils(checkout)
    except ImportError as exc:
        print(f"cosmos_utils not importable here: {type(exc).__name__}: {exc}")
        sys.exit(77)
    import numpy as np
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # cosmos_utils calls .cuda() on every tensor

    class FakeNet(torch.nn.Module):
        """The 2B network's two entry points cosmos_utils calls, with the real shapes."""

        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(state_t=9, min_num_conditional_frames=4)
            self.calls = []

        def generate_samples_from_batch(self, data_batch, n_sample=1, num_steps=35, seed=1, is_negative_prompt=False, use_variance_scale=False,
                                        skip_vae_encoding=False, previous_generated_latent=None, return_orig_clean_latent_frames=False, **kwargs):
            ncf = data_batch["num_conditional_frames"]
            self.calls.append({"seed": seed, "num_steps": num_steps, "ncf": ncf})
            latent = torch.rand((n_sample, 16, 9, 28, 28), generator=torch.Generator().manual_seed(seed)) * 2 - 1
            if previous_generated_latent is not None:  # conditioning frames kept, as the sampler does
                latent[:, :, :ncf] = previous_generated_latent[:, :, :ncf]
            return (latent, torch.zeros_like(latent)) if return_orig_clean_latent_frames else latent

        def decode(self, sample):
            frames = sample[:, :3].mean(dim=(3, 4), keepdim=True)  # (B, 3, 9, 1, 1)
            frames = torch.cat([frames[:, :, :1]] + [frames[:, :, t:t + 1].expand(-1, -1, 4, -1, -1) for t in range(1, 9)], dim=2)
            return frames.expand(-1, -1, -1, 224, 224).clamp(-1, 1)

    net = FakeNet()
    cu.get_model = lambda cfg: (net, SimpleNamespace(dataloader_train=SimpleNamespace(dataset=SimpleNamespace(chunk_size=16))))

    # the user's files: a checkpoint, statistics, a T5 cache of torch tensors (as the released .pkl)
    work.mkdir(parents=True, exist_ok=True)
    (work / "model.pt").write_bytes(b"fake")
    stats = {"actions_min": [-1.0] * 6 + [-1.0], "actions_max": [1.0] * 6 + [1.0], "proprio_min": [-1.0] * 9, "proprio_max": [1.0] * 9}
    (work / "stats.json").write_text(json.dumps(stats))
    with open(work / "t5.pkl", "wb") as f:
        pickle.dump({INSTRUCTION: torch.randn(1, 512, 1024, generator=torch.Generator().manual_seed(0))}, f)

    class NumpyOnly(pickle.Unpickler):  # the repo's sample observation needs numpy's reconstructors only
        def find_class(self, module, name):
            if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "ndarray", "dtype"):
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{module}.{name} refused")

    sample = Path(checkout) / "cosmos_policy/experiments/robot/libero/sample_libero_10_observation.pkl"
    with open(sample, "rb") as f:
        golden = NumpyOnly(f).load()

    from stress.core.policy import Observation
    from stress.policies.cosmos_server import add_arguments, make_server
    from stress.policies.remote import RemotePolicy

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    add_arguments(parser)
    args = parser.parse_args(["--cosmos-checkout", checkout, "--cosmos-ckpt", str(work / "model.pt"), "--cosmos-dataset-stats", str(work / "stats.json"),
                              "--cosmos-t5-embeddings", str(work / "t5.pkl")])
    server = make_server(args, log=lambda text: None)
    ready = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"ready": lambda port: ready.set()}, daemon=True).start()
    assert ready.wait(30)
    obs = Observation(images={"agentview": golden["primary_image"], "wrist": golden["wrist_image"]}, proprio=golden["proprio"], instruction=INSTRUCTION, step=0)
    client = RemotePolicy(server=f"ws://127.0.0.1:{server.port}", n_futures=2, n_values=2)
    client.reset(INSTRUCTION, seed=4, mode="direct")
    direct = client.act(obs)
    client.reset(INSTRUCTION, seed=4, mode="planning", n_candidates=2, aggregation="lcb")
    net.calls.clear()
    plan = client.act(obs)
    calls = list(net.calls)
    client.close()
    server.shutdown()
    members = np.array([c.ensemble_values for c in plan.candidates])
    # candidate 0 scored by Cosmos's own ensemble calls (which return only the aggregate): the same number
    from stress.policies.cosmos_server import LIBERO_CFG

    cfg = SimpleNamespace(**{**LIBERO_CFG, "value_ensemble_aggregation_scheme": "lcb"})
    stats = cu.load_dataset_stats(str(work / "stats.json"))
    cosmos_obs = {"primary_image": golden["primary_image"], "wrist_image": golden["wrist_image"], "proprio": golden["proprio"]}
    r = cu.get_action(cfg, net, stats, cosmos_obs, INSTRUCTION, seed=4000, num_denoising_steps_action=5, generate_future_state_and_value_in_parallel=False)
    idx = r["latent_indices"]
    fs = cu.get_future_state_prediction(cfg, net, r["data_batch"], r["generated_latent"], r["orig_clean_latent_frames"], idx["future_proprio_latent_idx"],
                                        idx["future_wrist_image_latent_idx"], idx["future_wrist_image2_latent_idx"], idx["future_image_latent_idx"],
                                        idx["future_image2_latent_idx"], seed=4000, num_denoising_steps_future_state=1,
                                        use_ensemble_future_state_predictions=True, num_future_state_predictions_in_ensemble=2)
    own = cu.get_value_prediction(cfg, net, r["data_batch"], fs["future_state_samples_list"], seed=4000, num_denoising_steps_value=1,
                                  use_ensemble_value_predictions=True, num_value_predictions_in_ensemble=2)["value_prediction"]
    stand_in = compare_with_stand_in(cu, net, cfg, stats, cosmos_obs)
    return {"stand_in_mismatches": stand_in, "direct": {"actions_shape": list(direct.actions.shape), "value": direct.predicted_value,
                       "future_shape": list(direct.predicted_future["agentview"].shape), "timing": direct.info["server_timing"]},
            "planning": {"ensemble_shape": list(members.shape), "seeds": [c.seed for c in plan.candidates], "chosen": plan.chosen,
                         "values": [c.predicted_value for c in plan.candidates], "cosmos_ensemble_value": own,
                         "actions_equal": bool(np.array_equal(plan.candidates[0].actions, np.stack(r["actions"]))), "calls": calls}}


def compare_with_stand_in(cu, net, cfg, stats, cosmos_obs) -> list[str]:
    """Where tests/fake_cosmos's cosmos_utils departs from the real one: signatures (names, defaults, kinds)
    and get_action's return dict (keys, types, shapes). An empty list: the stand-in honours the real contract."""
    import importlib.util
    import inspect

    import numpy as np

    path = Path(__file__).parent / "fake_cosmos" / "cosmos_policy" / "experiments" / "robot" / "cosmos_utils.py"
    spec = importlib.util.spec_from_file_location("fake_cosmos_utils", path)
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    problems = []
    for name in ("get_model", "get_planning_model", "load_dataset_stats", "init_t5_text_embeddings_cache", "get_t5_embedding_from_cache",
                 "prepare_images_for_model", "get_action", "get_future_state_prediction", "get_value_prediction", "get_qvalue_prediction",
                 "aggregate_value_predictions", "average_future_image_predictions"):
        real_params = [(p.name, p.default, p.kind) for p in inspect.signature(getattr(cu, name)).parameters.values()]
        fake_params = [(p.name, p.default, p.kind) for p in inspect.signature(getattr(fake, name)).parameters.values()]
        if real_params != fake_params:
            problems.append(f"{name}: real {real_params} vs stand-in {fake_params}")

    def describe(result):
        def kind(v):
            if isinstance(v, np.ndarray):
                return f"ndarray{v.shape}{v.dtype}"
            if isinstance(v, list):
                return f"list[{len(v)}]{kind(v[0]) if v else ''}"
            if isinstance(v, dict):
                return {k: kind(x) for k, x in v.items()}
            return "tensor" if hasattr(v, "shape") else type(v).__name__
        out = {k: kind(v) for k, v in result.items() if k not in ("generated_latent", "orig_clean_latent_frames", "data_batch", "text_embedding")}
        return {**out, "data_batch": sorted(result["data_batch"]), "num_conditional_frames": result["data_batch"]["num_conditional_frames"]}

    fake.init_t5_text_embeddings_cache(None)
    fake.t5_text_embeddings_cache.update({INSTRUCTION: fake.GPUTensor(np.zeros((1, 512, 1024), np.float32))})
    real_result = describe(cu.get_action(cfg, net, stats, cosmos_obs, INSTRUCTION, seed=1))
    fake_result = describe(fake.get_action(cfg, fake.FakeModel("base"), stats, cosmos_obs, INSTRUCTION, seed=1))
    real_result["all_camera_images"] = fake_result["all_camera_images"] = "images"  # real: after JPEG and crop; same shape
    if real_result != fake_result:
        problems.append(f"get_action returns: real {real_result} vs stand-in {fake_result}")
    return problems


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
