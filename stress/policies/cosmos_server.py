"""Cosmos Policy served over ``stress-policy/1`` (``stress serve --policy cosmos``; docs/cosmos-policy.md).

Runs inside the user's Cosmos Policy environment (torch 2.7, CUDA, its checkout on the path, weights already
downloaded): it imports ``cosmos_policy.experiments.robot.cosmos_utils`` from ``--cosmos-checkout`` lazily,
loads the model, the dataset statistics and the T5 embedding cache once, and answers the suite's requests with
Cosmos's own primitives (``get_action``, ``get_future_state_prediction``, ``get_value_prediction``,
``aggregate_value_predictions``). The best-of-N loop is ours, not ``run_libero_eval.run_episode`` (which
hard-wires the env, video writes and reseeding), and it handles every pitfall listed in docs/cosmos-policy.md:

* images arrive upright (the suite flips MuJoCo's render vertically, ``np.flipud``) and go to ``get_action``
  untouched: no second flip, never a 180° rotation; exactly 256 px square uint8, LIBERO's ``env_img_res``;
* a seed per decision (``seed * 1000 + d``), candidate ``i`` sampled with ``seed_d + i``;
* the first ``--cosmos-execute`` actions of the 16 returned (``actions[:H]``, not the eval loop's deque tail);
* every helper gets its own copy of ``data_batch`` (they rewrite ``num_conditional_frames`` and mask flags);
* the return dicts' GPU tensors (``data_batch``, latents) are dropped, never serialised, and the CUDA cache
  emptied after each decision;
* mode combinations that crash Cosmos's own loop are refused at reset, and anything Cosmos raises is an error
  reply (the suite stores the episode as an error, not as a task failure);
* an instruction missing from the T5 cache is refused at reset: Cosmos would load T5-11B on the GPU and
  rewrite the cache file. With ``--cosmos-t5-encoder PATH`` (a T5 encoder saved locally, and ``transformers`` in
  the server's environment) the server embeds it instead, as Cosmos's on-demand encoding does (the encoder's
  last hidden state over 512 tokens, padding zeroed), in memory only: the cache file is never rewritten.

Its module-level imports are numpy, msgpack, websockets (through ``serve``) and the standard library only, so
this file and ``serve.py`` can be copied into Cosmos's Python 3.10/3.12 environment and run there
(``python cosmos_server.py --cosmos-checkout PATH``) without installing the suite.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

try:  # inside the suite
    from stress.core.errors import UserError
    from stress.policies.serve import DEFAULT_HOST, DEFAULT_PORT, PolicyServer, describe
except ImportError:  # copied next to serve.py into Cosmos's environment
    from serve import DEFAULT_HOST, DEFAULT_PORT, PolicyServer, describe

    class UserError(ValueError):
        """Bad input: reported in one line (exit 2), or as a ``bad_request`` reply."""


NAME = "cosmos-policy"
COSMOS_UTILS = "cosmos_policy.experiments.robot.cosmos_utils"
IMAGE_SIZE = 256  # LIBERO's env_img_res in Cosmos's eval; get_action resizes to 224 itself
CHUNK = 16  # LIBERO's chunk_size (asserted against the checkpoint's dataloader config at load)
PROPRIO_DIM = 9
CAMERAS = {"agentview": "primary_image", "wrist": "wrist_image"}  # suite camera -> get_action obs key
FUTURES = {"future_image": "agentview", "future_wrist_image": "wrist"}  # get_action future key -> suite camera
# what aggregate_value_predictions computes without raising (its config comment also lists
# gamma_weighted_average, which it does not implement: requested, it fails as Cosmos fails, an error reply)
AGGREGATIONS = ("average", "lcb", "success_vote", "majority_mean")
KNOWN_AGGREGATIONS = (*AGGREGATIONS, "gamma_weighted_average")
# the predicted futures live in the model's view (JPEG -> 224 -> 90 % centre crop -> 224): this tag
# makes the suite's ground truth pass the true frames through the same transform (groundtruth.FUTURE_VIEWS)
FUTURE_VIEW = "cosmos"
SEED_SPACE = 2**32  # the initial noise is np.random.RandomState(seed): seeds must fit in 32 bits

# the released LIBERO checkpoint and its files (LIBERO.md's eval command), resolved from the local HF cache
DEFAULT_CKPT = "nvidia/Cosmos-Policy-LIBERO-Predict2-2B"
DEFAULT_CONFIG = "cosmos_predict2_2b_480p_libero__inference_only"
DEFAULT_CONFIG_FILE = "cosmos_policy/config/config.py"
DEFAULT_STATS = f"{DEFAULT_CKPT}/libero_dataset_statistics.json"
DEFAULT_T5 = f"{DEFAULT_CKPT}/libero_t5_embeddings.pkl"
T5_TOKENS, T5_WIDTH = 512, 1024  # a cached embedding is (1, 512, 1024): T5-11B's hidden states over 512 tokens

# run_libero_eval.PolicyEvalConfig's fields that cosmos_utils reads, LIBERO values. Copied, not
# imported: importing run_libero_eval pulls libero, wandb, h5py and draccus.
LIBERO_CFG = dict(suite="libero", use_third_person_image=True, num_third_person_images=1, use_wrist_image=True,
                  num_wrist_images=1, use_proprio=True, normalize_proprio=True, unnormalize_actions=True,
                  chunk_size=CHUNK, use_variance_scale=False, use_jpeg_compression=True, trained_with_image_aug=True,
                  flip_images=True,  # documents that the *caller* flips (the suite does); get_action never reads it
                  mask_current_state_action_for_value_prediction=False, mask_future_state_for_qvalue_prediction=False,
                  value_ensemble_aggregation_scheme="average", randomize_seed=False, deterministic=True)

# request-tunable knobs (metadata "settings") and their defaults: PolicyEvalConfig's LIBERO defaults, except
# that planning predicts its value autoregressively from the world model's future (the paper's planning);
# n_futures/n_values 1 = Cosmos's ensembles off
SETTINGS = {
    "num_denoising_steps": 5,  # num_denoising_steps_action (the name policy_noise scales)
    "num_denoising_steps_future_state": 1,
    "num_denoising_steps_value": 1,
    "ar_future_prediction": True,  # planning only: futures from get_future_state_prediction
    "ar_value_prediction": True,  # planning only: values from get_value_prediction
    "ar_qvalue_prediction": False,  # planning only: Q(s, a); needs an unreleased checkpoint, refused
    "n_futures": 1,  # M: num_future_state_predictions_in_ensemble
    "n_values": 1,  # L: values per future
    "future_state_ensemble_aggregation_scheme": "average",  # "average", or anything else = Cosmos's "last"
}


@dataclass
class CosmosCandidate:
    actions: np.ndarray
    predicted_value: float | None
    predicted_future: dict | None
    seed: int
    ensemble_values: np.ndarray | None


@dataclass
class CosmosDecision:
    """Duck-typed ``stress.core.policy.Decision`` (serve.decision_message reads these fields)."""

    actions: np.ndarray
    predicted_value: float | None
    predicted_future: dict | None
    candidates: list = field(default_factory=list)
    chosen: int | None = None
    aggregation: str | None = None
    info: dict = field(default_factory=dict)


# --- loading (once per server) ------------------------------------------------------------------------------
def _hash_files(paths, names: bool = True) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if names:
            digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def checkpoint_version(ckpt: str) -> str:
    """What identifies the weights: a local checkpoint's content hash, or an HF repo's cached commit."""
    path = Path(ckpt).expanduser()
    if path.is_file():
        return f"{path.name}@{_hash_files([path], names=False)}"  # what sha256sum prints
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".pt", ".pth", ".safetensors", ".json", ".yaml"))
        return f"{path.name}@{_hash_files(files)}"
    # an HF id resolved offline from the hub cache: refs/main holds the snapshot's commit
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    ref = hub / f"models--{ckpt.replace('/', '--')}" / "refs" / "main"
    return f"{ckpt}@{ref.read_text().strip()[:12]}" if ref.is_file() else f"{ckpt}@unresolved"


def _repo_commit(checkout: Path) -> str | None:
    head = checkout / ".git" / "HEAD"
    try:
        text = head.read_text().strip()
        if text.startswith("ref: "):
            return (checkout / ".git" / text[5:]).read_text().strip()[:12]
        return text[:12]
    except OSError:
        return None


class CosmosRuntime:
    """cosmos_utils, the model(s), dataset statistics and the T5 cache: loaded once, shared by every
    connection's policy object."""

    def __init__(self, options: argparse.Namespace, log=print):
        checkout = Path(options.cosmos_checkout).expanduser().resolve()
        if not (checkout / "cosmos_policy").is_dir():
            raise UserError(f"--cosmos-checkout {options.cosmos_checkout!r} holds no cosmos_policy/ package; valid: the root of a cosmos-policy checkout")
        if not 1 <= options.cosmos_execute <= CHUNK:
            raise UserError(f"--cosmos-execute {options.cosmos_execute} invalid; valid: 1-{CHUNK} (of the {CHUNK} actions per query)")
        self.defaults = parse_settings(options.cosmos_set or [])
        for flag, value in (("--cosmos-ckpt", options.cosmos_ckpt), ("--cosmos-dataset-stats", options.cosmos_dataset_stats),
                            ("--cosmos-t5-embeddings", options.cosmos_t5_embeddings), ("--cosmos-planning-ckpt", options.cosmos_planning_ckpt)):
            # a local path (HF ids "org/name/..." are resolved by Cosmos from the HF cache): missing = a typo
            if value and value.startswith(("/", ".", "~")) and not Path(value).expanduser().exists():
                raise UserError(f"{flag} {value!r} does not exist; valid: a local path, or an HF id (org/name/...) in the HF cache")
        if options.cosmos_planning_ckpt and not options.cosmos_planning_config:
            raise UserError("--cosmos-planning-ckpt needs --cosmos-planning-config NAME (the planning model's experiment)")
        # offline unless the user says otherwise: building Cosmos's config downloads the Predict2 and ALOHA
        # checkpoints and a T5 miss would fetch T5-11B
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("WANDB_MODE", "disabled")
        if str(checkout) not in sys.path:
            sys.path.insert(0, str(checkout))
        try:
            self.cu = importlib.import_module(COSMOS_UTILS)
        except ImportError as exc:
            raise UserError(f"cannot import {COSMOS_UTILS} from {checkout} ({type(exc).__name__}: {exc}); run the server with the Python of Cosmos Policy's environment") from None
        if getattr(self.cu, "ACTION_DIM", 7) != 7:  # bound from sys.argv at import
            raise UserError(f"cosmos_utils.ACTION_DIM is {self.cu.ACTION_DIM}; LIBERO needs 7 (set cosmos_policy.constants before the import)")
        torch = sys.modules.get("torch")
        if torch is not None and getattr(options, "threads", 0):
            torch.set_num_threads(options.threads)
        self.execute, self.checkout = int(options.cosmos_execute), checkout
        self.cfg = SimpleNamespace(**LIBERO_CFG, config=options.cosmos_config, ckpt_path=options.cosmos_ckpt, config_file=options.cosmos_config_file,
                                   planning_model_config_name=options.cosmos_planning_config or "", planning_model_ckpt_path=options.cosmos_planning_ckpt or "",
                                   dataset_stats_path=options.cosmos_dataset_stats, t5_text_embeddings_path=options.cosmos_t5_embeddings,
                                   num_open_loop_steps=self.execute, seed=0, **self.defaults_as_cfg())
        # the small files first: a wrong path fails before minutes of model loading
        self.dataset_stats = self.cu.load_dataset_stats(self.cfg.dataset_stats_path)
        self.cu.init_t5_text_embeddings_cache(self.cfg.t5_text_embeddings_path)
        # a snapshot of the keys: requests are checked against the file as loaded, never against entries a
        # T5-11B fallback would add
        self.instructions = frozenset(self.cu.t5_text_embeddings_cache)
        if not self.instructions:  # Cosmos only prints a warning and would embed every instruction with T5-11B
            raise UserError(f"the T5 embeddings cache {options.cosmos_t5_embeddings!r} loaded no instruction; valid: a pickle of instruction -> (1, 512, 1024) embedding")
        encoder = getattr(options, "cosmos_t5_encoder", None)
        self.encoder = T5Encoder(encoder) if encoder else None
        self.embedded: dict[str, float] = {}  # instructions this server embedded itself -> seconds it took
        self._embed_lock = threading.Lock()
        started = time.perf_counter()
        log(f"cosmos: loading {options.cosmos_ckpt} ({options.cosmos_config})")
        self.model, cosmos_config = self.cu.get_model(self.cfg)
        trained_chunk = _get(cosmos_config, "dataloader_train", "dataset", "chunk_size")
        if trained_chunk is not None and trained_chunk != CHUNK:  # the eval script asserts the same
            raise UserError(f"checkpoint {options.cosmos_ckpt} was trained with chunk_size {trained_chunk}; this server serves LIBERO's {CHUNK}")
        self.planning_model = None
        if options.cosmos_planning_ckpt:
            log(f"cosmos: loading planning model {options.cosmos_planning_ckpt}")
            self.planning_model, _ = self.cu.get_planning_model(self.cfg)
        self.load_s = time.perf_counter() - started  # the model(s) only
        version = checkpoint_version(options.cosmos_ckpt)
        if options.cosmos_planning_ckpt:
            version += "+planning:" + checkpoint_version(options.cosmos_planning_ckpt)
        self.version = version
        log(f"cosmos: loaded in {self.load_s:.1f} s; {len(self.instructions)} cached instructions")

    def defaults_as_cfg(self) -> dict:
        # the cfg carries the served defaults too, for whoever reads it (the metadata dumps it)
        d = self.defaults
        return dict(num_denoising_steps_action=d["num_denoising_steps"], num_denoising_steps_future_state=d["num_denoising_steps_future_state"],
                    num_denoising_steps_value=d["num_denoising_steps_value"], ar_future_prediction=d["ar_future_prediction"],
                    ar_value_prediction=d["ar_value_prediction"], ar_qvalue_prediction=d["ar_qvalue_prediction"],
                    num_future_state_predictions_in_ensemble=d["n_futures"], num_value_predictions_in_ensemble=d["n_values"],
                    future_state_ensemble_aggregation_scheme=d["future_state_ensemble_aggregation_scheme"])

    def release(self) -> None:
        """After a decision: the dropped return dicts' GPU memory back to the allocator's pool."""
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def metadata(self) -> dict:
        torch = sys.modules.get("torch")
        software = {"cosmos_policy_commit": _repo_commit(self.checkout), "checkpoint": self.cfg.ckpt_path, "config": self.cfg.config,
                    "cfg": {k: v for k, v in vars(self.cfg).items() if isinstance(v, (bool, int, float, str))},
                    "execute": self.execute, "load_s": round(self.load_s, 2), "t5_cached_instructions": len(self.instructions),
                    "t5_encoder": self.encoder.path if self.encoder else None,
                    "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE")}
        hardware = {"device": "cpu"}
        if torch is not None:
            software["torch"] = torch.__version__
            if torch.cuda.is_available():  # results differ across GPUs (TF32, per-SM attention kernels): record it
                hardware = {"device": "cuda", "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                            "allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
        metadata = describe(CosmosPolicy, version=self.version, chunk=self.execute, image_size=IMAGE_SIZE, cameras=tuple(CAMERAS),
                            aggregations=AGGREGATIONS, predictions=("value", "future_images", "candidates", "ensemble_values"),
                            settings=dict(self.defaults), software=software, hardware=hardware)
        if self.encoder:  # any instruction can be embedded: no list for the client to refuse tasks by
            return metadata
        # the optional "instructions" field: a client refuses tasks outside the T5 cache before a run starts
        return {**metadata, "instructions": sorted(self.instructions)}

    def knows(self, instruction) -> bool:
        """Whether ``instruction`` has a T5 embedding: cached, or embedded now by ``--cosmos-t5-encoder``."""
        if instruction in self.instructions or instruction in self.embedded:
            return True
        if self.encoder is None or not isinstance(instruction, str):
            return False
        with self._embed_lock:
            if instruction not in self.embedded:
                started = time.perf_counter()
                cache = self.cu.t5_text_embeddings_cache
                cache[instruction] = _like(next(iter(cache.values())), self.encoder(instruction))
                self.embedded[instruction] = time.perf_counter() - started
        return True


class T5Encoder:
    """Cosmos's T5 text embedding of an instruction outside the cache, computed in the server's environment: the
    encoder's last hidden state over ``T5_TOKENS`` tokens (truncated or padded), the padding positions zeroed,
    (1, 512, 1024) float32, the shape and layout of the cached ones (Cosmos's on-demand encoding does the same
    with T5-11B). Loaded once from a local folder (``save_pretrained``: config, weights, tokenizer); offline."""

    def __init__(self, path: str):
        try:
            import transformers  # optional: only a server told to embed new instructions needs it
        except ImportError:
            raise UserError("--cosmos-t5-encoder needs transformers in the server's Python environment (pip install transformers); "
                            "without the flag, instructions outside the T5 cache are refused") from None
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise UserError(f"--cosmos-t5-encoder {path!r} holds no config.json; valid: a local folder of a T5 encoder saved with save_pretrained "
                            "(config, weights, tokenizer), e.g. google-t5/t5-11b's, downloaded beforehand")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = transformers.T5EncoderModel.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise UserError(f"--cosmos-t5-encoder {path!r} does not load as a T5 encoder ({type(exc).__name__}: {first})") from None
        if self.model.config.d_model != T5_WIDTH:
            raise UserError(f"--cosmos-t5-encoder {path!r} has width {self.model.config.d_model}; valid: a T5 encoder of width {T5_WIDTH} (T5-11B's, "
                            "as the cached embeddings)")
        self.path = str(folder)

    def __call__(self, text: str) -> np.ndarray:
        torch = sys.modules["torch"]  # imported by transformers
        batch = self.tokenizer([text], return_tensors="pt", truncation=True, padding="max_length", max_length=T5_TOKENS)
        with torch.no_grad():
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        out = hidden.float().cpu().numpy().astype(np.float32)
        out[0, int(batch["attention_mask"][0].sum()):] = 0.0
        return out


def _like(reference, array: np.ndarray):
    """``array`` as the cache holds its entries (a torch tensor on their device and dtype; a stand-in's own type)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(reference, torch.Tensor):
        return torch.as_tensor(array).to(device=reference.device, dtype=reference.dtype)
    if isinstance(reference, np.ndarray):
        return array.astype(reference.dtype)
    return type(reference)(array)


def _get(obj, *names):
    for name in names:
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _parse_value(text: str, default):
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("true or false")
    if isinstance(default, int):
        return int(text)
    return text


def parse_settings(pairs) -> dict:
    """``--cosmos-set NAME=VALUE`` pairs over SETTINGS: the served defaults."""
    settings = dict(SETTINGS)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in SETTINGS:
            raise UserError(f"--cosmos-set {pair!r} invalid; valid: NAME=VALUE with NAME one of {', '.join(SETTINGS)}")
        try:
            settings[name] = _parse_value(text, SETTINGS[name])
        except ValueError:
            raise UserError(f"--cosmos-set {pair!r}: {text!r} is not a valid {type(SETTINGS[name]).__name__}") from None
    check_settings(settings, planning=False)
    return settings


def check_settings(values: dict, planning: bool) -> None:
    """Types, ranges, and (planning) the mode combinations Cosmos's own LIBERO loop crashes on."""
    for name, default in SETTINGS.items():
        value = values[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"setting {name} {value!r} invalid; valid: true, false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"setting {name} {value!r} invalid; valid: an integer >= 1")
        elif not isinstance(value, str):
            raise UserError(f"setting {name} {value!r} invalid; valid: a string")
    if not planning:
        return
    future, value, qvalue = values["ar_future_prediction"], values["ar_value_prediction"], values["ar_qvalue_prediction"]
    if qvalue:
        raise UserError("setting ar_qvalue_prediction true refused: Q(s, a) needs a checkpoint that is not released, and Cosmos's LIBERO loop "
                        "crashes on it (KeyError 'future_image_predictions'); valid: false")
    if value and not future:
        raise UserError("settings ar_value_prediction true with ar_future_prediction false refused: Cosmos's loop crashes on it "
                        "(NameError future_state_return_dict); valid: both true, or both false (the joint value)")
    if future and not value:
        raise UserError("settings ar_future_prediction true with ar_value_prediction false refused: Cosmos's loop crashes on it "
                        "(KeyError 'value_prediction': get_action drops the joint value when a role is autoregressive); valid: both true, or both false")


# --- the policy object (one per connection) ----------------------------------------------------------------
def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (never expected in the fields read here; safe if it is)
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def _future(predictions) -> dict | None:
    """get_action's future images (224 px, the model's cropped view) under the suite's camera names: copies,
    so nothing of the return dict is kept."""
    if not predictions:
        return None
    out = {FUTURES[k]: np.array(_numpy(v), dtype=np.uint8) for k, v in predictions.items() if k in FUTURES and v is not None}
    return out or None


class CosmosPolicy:
    """The policy protocol over a CosmosRuntime (``reset``, ``act``); ``stress.policies.serve`` serves it."""

    name = NAME
    modes = ("direct", "planning")
    uses_images = True

    def __init__(self, runtime: CosmosRuntime):
        self.runtime = runtime
        for key, value in runtime.defaults.items():  # the Session sets them again on every request
            setattr(self, key, value)
        self._episode: dict | None = None

    def _settings(self) -> dict:
        return {k: getattr(self, k) for k in SETTINGS}

    def _check_instruction(self, instruction, when: str) -> None:
        if not self.runtime.knows(instruction):
            cached = self.runtime.instructions
            close = difflib.get_close_matches(str(instruction), list(cached), n=1, cutoff=0.6)
            hint = f"; closest cached: {close[0]!r}" if close else ""
            raise UserError(f"instruction {instruction!r} ({when}) is not in the T5 embeddings cache ({len(cached)} instructions); refused, "
                            f"Cosmos would load T5-11B to embed it and rewrite the cache: precompute its embedding offline, or start the server "
                            f"with --cosmos-t5-encoder PATH (transformers and a local T5 encoder in its environment){hint}")

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        if mode not in self.modes:
            raise UserError(f"cosmos-policy has no mode {mode!r}; valid: {', '.join(self.modes)}")
        check_settings(self._settings(), planning=mode == "planning")
        if mode == "planning":
            if isinstance(n_candidates, bool) or not isinstance(n_candidates, int) or n_candidates < 1:
                raise UserError(f"n_candidates {n_candidates!r} invalid; valid: an integer >= 1")
            aggregation = aggregation or "average"
            if aggregation not in KNOWN_AGGREGATIONS:
                raise UserError(f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        self._check_instruction(instruction, "at reset")
        self._episode = {"instruction": instruction, "seed": int(seed), "mode": mode, "n_candidates": int(n_candidates) if mode == "planning" else 1,
                         "aggregation": aggregation if mode == "planning" else None, "decision": 0}

    def _observation(self, obs) -> dict:
        images = obs.images
        for camera in CAMERAS:
            image = images.get(camera)
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise UserError(f"image {camera!r} is {got}; valid: uint8 ({IMAGE_SIZE}, {IMAGE_SIZE}, 3), upright (LIBERO rendered at {IMAGE_SIZE} px)")
        proprio = np.asarray(obs.proprio, dtype=np.float64)
        if proprio.shape != (PROPRIO_DIM,) or not np.isfinite(proprio).all():
            raise UserError(f"proprio of shape {proprio.shape} invalid; valid: {PROPRIO_DIM} finite floats (gripper qpos 2, eef pos 3, eef quat xyzw 4)")
        # upright already (the suite flips MuJoCo's render vertically, as Cosmos's get_libero_image does):
        # passed as they are; get_action never flips, and a 180° rotation would be wrong
        return {"primary_image": np.ascontiguousarray(images["agentview"]), "wrist_image": np.ascontiguousarray(images["wrist"]), "proprio": proprio}

    def act(self, obs) -> CosmosDecision:
        if self._episode is None:
            raise UserError("act before reset")
        episode, settings = self._episode, self._settings()
        planning = episode["mode"] == "planning"
        check_settings(settings, planning=planning)
        instruction = obs.instruction or episode["instruction"]
        self._check_instruction(instruction, "at a decision")  # a paraphrase perturbation changes it mid-episode
        observation = self._observation(obs)
        # a seed per decision (Cosmos's eval reuses cfg.seed + i at every decision of every episode)
        seed = (episode["seed"] * 1000 + episode["decision"]) % SEED_SPACE
        episode["decision"] += 1
        try:
            if planning:
                return self._plan(observation, instruction, seed, settings)
            return self._direct(observation, instruction, seed, settings)
        finally:
            self.runtime.release()

    def _get_action(self, observation, instruction, seed, settings, parallel: bool) -> dict:
        rt = self.runtime
        return rt.cu.get_action(rt.cfg, rt.model, rt.dataset_stats, observation, instruction, seed=seed, randomize_seed=False,
                                num_denoising_steps_action=settings["num_denoising_steps"],
                                generate_future_state_and_value_in_parallel=parallel)

    def _actions(self, result: dict) -> np.ndarray:
        actions = np.stack([_numpy(a) for a in result["actions"]]).astype(np.float64)
        return actions[: self.runtime.execute]  # the first H (run_libero_eval's deque(maxlen=H) would keep the last H)

    def _direct(self, observation, instruction, seed, settings) -> CosmosDecision:
        started = time.perf_counter()
        result = self._get_action(observation, instruction, seed, settings, parallel=True)
        actions, value, future = self._actions(result), float(result["value_prediction"]), _future(result.get("future_image_predictions"))
        del result  # GPU tensors (data_batch, latents): dropped here, never serialised
        return CosmosDecision(actions=actions, predicted_value=value, predicted_future=future,
                              info={"seed": seed, "denoising_steps": settings["num_denoising_steps"], "future_view": FUTURE_VIEW,
                                    "timing_ms": {"action": (time.perf_counter() - started) * 1000}})

    def _plan(self, observation, instruction, base_seed, settings) -> CosmosDecision:
        rt, episode = self.runtime, self._episode
        autoregressive = settings["ar_future_prediction"]  # check_settings: both AR flags equal
        world = rt.planning_model if rt.planning_model is not None else rt.model  # LIBERO: the base model (no planning checkpoint)
        m, l = settings["n_futures"], settings["n_values"]
        # Cosmos's ensemble schedule: member k uses seed + k and linspace(1, steps, size)[k] denoising steps; with one
        # value per future (L = 1) Cosmos's value ensemble flag is off and its call uses num_denoising_steps_value,
        # whatever M is (not linspace(1, steps, 1) = one step)
        value_steps = np.linspace(1, settings["num_denoising_steps_value"], l).astype(int).tolist() if l > 1 else [settings["num_denoising_steps_value"]]
        candidates, scores, schedules = [], [], []
        timing = {"action": 0.0, "future": 0.0, "value": 0.0}
        for i in range(episode["n_candidates"]):
            seed = (base_seed + i) % SEED_SPACE
            t0 = time.perf_counter()
            result = self._get_action(observation, instruction, seed, settings, parallel=not autoregressive)
            actions = self._actions(result)
            timing["action"] += time.perf_counter() - t0
            schedule: dict[str, Any] = {"seed": seed}
            if not autoregressive:  # the joint sample's value and futures (one member)
                future, members = _future(result.get("future_image_predictions")), [float(result["value_prediction"])]
            else:
                t0 = time.perf_counter()
                idx = result["latent_indices"]
                # each helper gets data_batch as get_action built it: they rewrite num_conditional_frames and
                # mask flags in place
                fs = rt.cu.get_future_state_prediction(
                    rt.cfg, model=world, data_batch=dict(result["data_batch"]), generated_latent_with_action=result["generated_latent"],
                    orig_clean_latent_frames=result["orig_clean_latent_frames"], future_proprio_latent_idx=idx["future_proprio_latent_idx"],
                    future_wrist_image_latent_idx=idx["future_wrist_image_latent_idx"], future_wrist_image2_latent_idx=idx["future_wrist_image2_latent_idx"],
                    future_image_latent_idx=idx["future_image_latent_idx"], future_image2_latent_idx=idx["future_image2_latent_idx"],
                    seed=seed, randomize_seed=False, num_denoising_steps_future_state=settings["num_denoising_steps_future_state"],
                    use_ensemble_future_state_predictions=m > 1, num_future_state_predictions_in_ensemble=m,
                    future_state_ensemble_aggregation_scheme=settings["future_state_ensemble_aggregation_scheme"])
                future, samples = _future(fs.get("future_image_predictions")), list(fs["future_state_samples_list"])
                timing["future"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                # the M x L members one call each, exactly the calls get_value_prediction's ensemble makes (value
                # member j of every future: seed + j, linspace steps), because it returns only their aggregate
                members = []
                for sample in samples:
                    for j in range(l):
                        out = rt.cu.get_value_prediction(rt.cfg, world, dict(result["data_batch"]), [sample], seed=(seed + j) % SEED_SPACE,
                                                         randomize_seed=False, num_denoising_steps_value=value_steps[j],
                                                         use_ensemble_value_predictions=False)
                        members.append(float(out["value_prediction"]))
                del samples, fs
                timing["value"] += time.perf_counter() - t0
                schedule.update(future_seeds=[(seed + k) % SEED_SPACE for k in range(m)],
                                future_steps=np.linspace(1, settings["num_denoising_steps_future_state"], m).astype(int).tolist() if m > 1 else [settings["num_denoising_steps_future_state"]],
                                value_seeds=[(seed + j) % SEED_SPACE for j in range(l)], value_steps=value_steps)
            del result  # GPU tensors dropped before the next candidate allocates its own
            score = self._aggregate(members, episode["aggregation"])
            candidates.append(CosmosCandidate(actions=actions, predicted_value=score, predicted_future=future, seed=seed,
                                              ensemble_values=np.asarray(members, dtype=np.float64)))
            scores.append(score)
            schedules.append(schedule)
        # Cosmos: max over candidates, the first maximum wins (ties at 0 under lcb are common)
        chosen = int(np.argmax(scores))
        best = candidates[chosen]
        return CosmosDecision(actions=best.actions, predicted_value=best.predicted_value, predicted_future=best.predicted_future,
                              candidates=candidates, chosen=chosen, aggregation=episode["aggregation"],
                              info={"seed": base_seed, "candidate_values": scores, "schedules": schedules, "future_view": FUTURE_VIEW,
                                    "value_source": "autoregressive" if autoregressive else "joint",
                                    "timing_ms": {k: v * 1000 for k, v in timing.items()}})

    def _aggregate(self, members: list[float], how: str) -> float:
        if len(members) == 1:  # Cosmos aggregates only ensembles; one value is the score as it is
            return members[0]
        import torch  # Cosmos's environment has it; aggregate_value_predictions stacks torch tensors

        score = self.runtime.cu.aggregate_value_predictions([torch.tensor([v]) for v in members], how)
        score = float(score.reshape(-1)[0])
        if not math.isfinite(score):
            raise ValueError(f"aggregation {how!r} gave {score}")
        return score


# --- command line -------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--cosmos-*`` flags (``stress serve --policy cosmos`` and this module's own ``main``)."""
    group = parser.add_argument_group("Cosmos Policy (--policy cosmos; docs/cosmos-policy.md)")
    group.add_argument("--cosmos-checkout", metavar="PATH", help="root of the cosmos-policy checkout (holds cosmos_policy/); its Python environment runs the server")
    group.add_argument("--cosmos-ckpt", default=DEFAULT_CKPT, metavar="PATH|ORG/NAME", help=f"checkpoint: a local file/folder, or an HF repo already in the HF cache (default {DEFAULT_CKPT})")
    group.add_argument("--cosmos-config", default=DEFAULT_CONFIG, metavar="NAME", help=f"inference experiment (default {DEFAULT_CONFIG})")
    group.add_argument("--cosmos-config-file", default=DEFAULT_CONFIG_FILE, metavar="PATH", help=f"Cosmos config file (default {DEFAULT_CONFIG_FILE})")
    group.add_argument("--cosmos-dataset-stats", default=DEFAULT_STATS, metavar="PATH", help=f"action/proprio statistics JSON (default {DEFAULT_STATS})")
    group.add_argument("--cosmos-t5-embeddings", default=DEFAULT_T5, metavar="PATH", help=f"T5 embeddings pickle (default {DEFAULT_T5}); instructions outside it are refused")
    group.add_argument("--cosmos-t5-encoder", metavar="PATH", help="a local T5 encoder folder (save_pretrained; transformers in this environment): "
                       "instructions outside the T5 cache are embedded with it, in memory, instead of refused")
    group.add_argument("--cosmos-planning-ckpt", metavar="PATH|ORG/NAME", help="optional planning model (world model + value); LIBERO has none: the base model plans")
    group.add_argument("--cosmos-planning-config", metavar="NAME", help="experiment of --cosmos-planning-ckpt")
    group.add_argument("--cosmos-execute", type=int, default=CHUNK, metavar="H", help=f"actions executed per query, the first H of {CHUNK} (default {CHUNK})")
    group.add_argument("--cosmos-set", action="append", metavar="NAME=VALUE", help=f"a served default (repeatable): {', '.join(SETTINGS)}")


def given_flags(args) -> list[str]:
    """The ``--cosmos-*`` flags set to something other than their default (to refuse them for other policies)."""
    defaults = argparse.ArgumentParser(add_help=False)
    add_arguments(defaults)
    return [f"--{name.replace('_', '-')}" for name, default in vars(defaults.parse_args([])).items() if getattr(args, name, default) != default]


def make_server(args, log=None) -> PolicyServer:
    """Load Cosmos once and wrap it in a PolicyServer (one CosmosPolicy per connection, one runtime)."""
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    if not args.cosmos_checkout:
        raise UserError("--policy cosmos needs --cosmos-checkout PATH (the root of a cosmos-policy checkout)")
    runtime = CosmosRuntime(args, log=log)
    try:  # wire, key and frame bound: `stress serve`'s flags (this module's own main keeps the defaults)
        return PolicyServer(lambda: CosmosPolicy(runtime), runtime.metadata(), host=args.host, port=args.port, user_errors=(UserError,), log=log,
                            wire=getattr(args, "wire", "stress"), api_key=getattr(args, "api_key", None), max_frame=getattr(args, "max_frame", None))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def main(argv=None) -> int:
    """Stand-alone entry in Cosmos's environment: ``python cosmos_server.py --cosmos-checkout PATH``."""
    parser = argparse.ArgumentParser(description="Serve Cosmos Policy over stress-policy/1")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        server = make_server(args)
        identity = f"{NAME}:{server.metadata['policy']['version']}"
        server.serve_forever(ready=lambda port: print(f"cosmos serve: {identity} on ws://{args.host}:{port}", file=sys.stderr, flush=True))
    except UserError as exc:
        print(f"cosmos serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
