"""The ``reference`` policy backend: the built-in model behind Cosmos Policy's contract.

Direct mode samples the policy role once per decision (actions, future images and proprio, value
together). Planning mode (best-of-N) draws N action chunks with seeds ``seed + i``; for each, the world
model role predicts ``n_futures`` futures and the value role (V(s') from the predicted future, or Q(s, a)
from the actions alone: ``value_source``) ``n_values`` values per future; the ensemble is aggregated
(``stress.policies.planning``) and the best candidate executed. Every candidate's predictions are in the
Decision.

Re-planning: ``replan_steps`` (default the whole chunk, the contract's ``chunk``) actions of each chunk are executed before the next
query, as Cosmos Policy's ``num_open_loop_steps`` (``stress card`` varies it: open-loop cascades).

Temperature: the policy role's initial noise is scaled by ``temperature`` (default: the checkpoint's own, else
``DEFAULT_TEMPERATURE``);
the world-model and value ensembles always sample at 1, so their spread stays the learned uncertainty.

Noise seeds: decision d of an episode reset with ``seed`` uses ``seed * 1000 + d`` (candidate i adds i), so
the same spec gives the same actions and different seeds give different candidates.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import zlib
import hashlib
from contextlib import nullcontext
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from stress.core.errors import UserError
from stress.core.policy import Candidate, Decision, Observation
from stress.policies.planning import AGGREGATIONS, best_candidate, check_aggregation
from stress.policies.serve import describe
from stress.policies.reference.model import (CHECKPOINT_FORMATS, CONTRACTS, LIBERO, Architecture, Contract, ReferenceNet, model_image, role_states,
                                             sample, text_batch, to_tensor_images)
from stress.policies.reference.ranker import RANKER_KEY, RankingHead, candidate_features
from stress.policies.reference.text import CHECKPOINT_VARIABLES, SHIPPED_CHECKPOINT, SHIPPED_CHECKPOINTS, checkpoint_path  # noqa: F401 (SHIPPED_CHECKPOINT: the policy's public name)

PRECISIONS = ("float32", "bfloat16")
VALUE_SOURCES = ("future", "action", "ranker")  # ranker: the checkpoint's optional ranking head (ranker.py)
# sampling the policy at half the noise: on the same 100 scenarios (independent seeds), direct success 68 -> 83 %
# (20 rescued, 5 lost). The model's action distribution is broader than the expert's; its tails miss grasps
# (docs/reference-model.md, "Temperature")
DEFAULT_TEMPERATURE = 0.5


# the unseen-instruction warning is given once per process: a language perturbation tells every episode another
# instruction, and a run would otherwise print one line per episode
UNSEEN_WARNING = {"given": False}

class CheckpointError(UserError):
    """A missing, corrupt or mismatching checkpoint."""


def load_checkpoint(path: Path, simulator: str = "libero") -> tuple[ReferenceNet, dict]:
    """Load a checkpoint (plain tensors and strings only: ``weights_only=True``). Raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        suite = f" --suite {simulator}" if simulator != "libero" else ""
        variable = CHECKPOINT_VARIABLES.get(simulator, CHECKPOINT_VARIABLES["libero"])
        raise CheckpointError(f"reference checkpoint {str(path)!r} not found; train one with `stress train-reference{suite}` and set {variable}=PATH "
                              "(or a scenario's policy option checkpoint)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch archive, pickled objects
        raise CheckpointError(f"reference checkpoint {str(path)!r} is corrupt or not a weights-only torch file ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") not in CHECKPOINT_FORMATS:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"reference checkpoint {str(path)!r} has format {found!r}; valid: {', '.join(map(repr, CHECKPOINT_FORMATS))}")
    try:
        arch = Architecture.from_dict(blob["architecture"])
        contract = Contract.from_dict(blob["contract"]) if "contract" in blob else LIBERO  # older files: LIBERO's
        net = ReferenceNet(arch, contract)
        state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
        net.load_state_dict(state)
        ranker = RankingHead.from_blob(blob[RANKER_KEY]) if blob.get(RANKER_KEY) else None
    except (TypeError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(f"reference checkpoint {str(path)!r} does not match this code's architecture: {first}") from None
    net.eval()
    meta = {"contract": contract, "temperature": float(blob.get("temperature", DEFAULT_TEMPERATURE)), "normalisation": blob["normalisation"], "instructions": list(blob["instructions"]), "manifest": json.loads(blob.get("manifest", "{}")),
            "ranker": ranker, "ranker_manifest": json.loads(blob.get("ranker_manifest", "{}"))}
    return net, meta


@functools.lru_cache(maxsize=8)
def _checkpoint_facts(path: str, mtime: float | None, simulator: str) -> tuple[bool, Contract]:
    """Whether the checkpoint at ``path`` holds a ranking head, and its contract (cached per file version: a run
    checks every spec; a missing file raises the one-line "not found")."""
    meta = load_checkpoint(Path(path), simulator)[1]
    return meta["ranker"] is not None, meta["contract"]


def check_contract(path: Path, contract: Contract, simulator: str) -> None:
    """A checkpoint drives only its own simulator's episodes (cameras, action and proprio widths differ)."""
    if contract.simulator != simulator:
        raise CheckpointError(f"reference checkpoint {path.name} is for {contract.describe()}; this episode's simulator is {simulator}: "
                              f"pass a checkpoint trained for {simulator} (`stress train-reference --suite {simulator}`)")


def check_images(images: dict[str, np.ndarray], cameras: tuple[str, ...] = LIBERO.cameras) -> None:
    for camera in cameras:
        if camera not in images:
            raise UserError(f"reference policy needs a {camera!r} image; got cameras {sorted(images)}")
        image = images[camera]
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise UserError(f"{camera} image must be a uint8 array; got {getattr(image, 'dtype', type(image).__name__)}")
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 32:
            raise UserError(f"{camera} image must be HxWx3 with H, W >= 32; got shape {image.shape}")


class ReferencePolicy:
    """Built-in joint policy / world model / value network (CPU), Cosmos Policy's contract."""

    name: ClassVar[str] = "reference"
    modes: ClassVar[tuple[str, ...]] = ("direct", "planning")
    # a checkpoint carries its contract (model.Contract): LIBERO's (the shipped file) or ALOHA's
    simulators: ClassVar[tuple[str, ...]] = tuple(CONTRACTS)
    # the runner passes the episode's simulator (``simulator``): it picks the default checkpoint and is checked
    # against the checkpoint's contract
    per_simulator: ClassVar[bool] = True
    uses_images: ClassVar[bool] = True

    def __init__(self, checkpoint: Path | None = None, num_denoising_steps: int = 5, precision: str = "float32",
                 value_source: str = "future", n_futures: int = 3, n_values: int = 5, temperature: float | None = None,
                 replan_steps: int | None = None, record_features: bool = False, simulator: str = "libero"):
        chunk = CONTRACTS[simulator].chunk if simulator in CONTRACTS else LIBERO.chunk
        replan_steps = chunk if replan_steps is None else replan_steps
        if isinstance(replan_steps, bool) or not isinstance(replan_steps, int) or not 1 <= replan_steps <= chunk:  # before the weights load
            raise UserError(f"replan_steps {replan_steps!r} invalid; valid: 1-{chunk} (actions of each chunk executed before the next query)")
        self.checkpoint_file = Path(checkpoint or checkpoint_path(simulator))
        self.net, self.meta = load_checkpoint(self.checkpoint_file, simulator)
        self.contract: Contract = self.meta["contract"]
        check_contract(self.checkpoint_file, self.contract, simulator)
        self.cameras = self.contract.cameras  # the runner renders only these
        self._slices = self.net.slices
        norm = self.meta["normalisation"]
        # absolute actions (ALOHA's joint positions) are generated in [-1, 1] between the training data's bounds; LIBERO's
        # are already in [-1, 1] (no bounds in the checkpoint)
        self._action_low = np.array(norm["action_low"], np.float64) if "action_low" in norm else None
        self._action_high = np.array(norm["action_high"], np.float64) if "action_high" in norm else None
        self._proprio_mean, self._proprio_std = np.array(norm["proprio_mean"], np.float32), np.array(norm["proprio_std"], np.float32)
        self._delta_std = np.array(norm["delta_std"], np.float32)
        self.num_denoising_steps, self.precision, self.value_source = num_denoising_steps, precision, value_source
        # None: the temperature the checkpoint was evaluated at (its ``temperature``), else DEFAULT_TEMPERATURE (LIBERO's file)
        self.n_futures, self.n_values = n_futures, n_values
        self.temperature = self.meta["temperature"] if temperature is None else temperature
        self.replan_steps = replan_steps
        # planning decisions also carry each candidate's ranking features (info["ranker_features"], N x F float32): the
        # ranking head's training data (stress.training.ranking); off by default, they are 2 kB per candidate
        self.record_features = bool(record_features)
        self._check_value_source()
        self.reset("", 0)

    @classmethod
    def check_options(cls, options: dict, simulator: str = "libero") -> None:
        """Before a run (``check_spec``): a known value_source, a checkpoint for the episode's simulator, and a ranking
        head in the checkpoint for ``ranker``."""
        source = options.get("value_source", "future")
        if source not in VALUE_SOURCES:
            raise UserError(f"value_source {source!r} unknown; valid: {', '.join(VALUE_SOURCES)}")
        path = Path(options.get("checkpoint") or checkpoint_path(simulator))
        has_ranker, contract = _checkpoint_facts(str(path), path.stat().st_mtime if path.is_file() else None, simulator)
        check_contract(path, contract, simulator)
        if source == "ranker":
            if not has_ranker:
                raise UserError(f"value_source 'ranker' needs a checkpoint with a ranking head; {path.name} has none "
                                "(add one with `stress train-ranker`); valid here: future, action")

    # --- serving (``stress serve``) -------------------------------------------------------------------------
    SERVED_SETTINGS: ClassVar[tuple[str, ...]] = ("num_denoising_steps", "precision", "temperature", "value_source", "n_futures", "n_values")

    def serving_metadata(self) -> dict:
        """Handshake metadata (docs/remote-policy.md): the version is the checkpoint's content hash."""
        path = Path(self.checkpoint_file)
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        return describe(self, version=version, chunk=self.contract.chunk, image_size=self.contract.render_size, cameras=self.cameras, aggregations=AGGREGATIONS,
                        predictions=("value", "future_images", "candidates", "ensemble_values", "predicted_proprio"),
                        settings={k: getattr(self, k) for k in self.SERVED_SETTINGS},
                        software={"torch": torch.__version__, "checkpoint": path.name},
                        hardware={"device": "cpu", "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()})

    # --- protocol -----------------------------------------------------------------------------------------
    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        if mode not in self.modes:
            raise UserError(f"reference policy has no mode {mode!r}; valid: {', '.join(self.modes)}")
        if mode == "planning":
            aggregation = aggregation or "average"
            check_aggregation(aggregation)
            if not isinstance(n_candidates, int) or n_candidates < 1:
                raise UserError(f"n_candidates {n_candidates!r} invalid; valid: an integer >= 1")
        if instruction and instruction not in self.meta["instructions"] and not UNSEEN_WARNING["given"]:
            UNSEEN_WARNING["given"] = True  # one line per process (a run's worker), not one per episode or rewrite
            print(f"warning: the reference model was not trained on the instruction {instruction!r}; it runs, but expect little "
                  "(further unseen instructions are not reported)", file=sys.stderr)
        self.instruction, self.seed, self.mode = instruction, int(seed), mode
        self.n_candidates, self.aggregation = n_candidates, aggregation
        self._decision = 0

    def act(self, obs: Observation) -> Decision:
        if self.precision not in PRECISIONS:
            raise UserError(f"precision {self.precision!r} unknown; valid: {', '.join(PRECISIONS)}")
        self._check_value_source()
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature <= 2:
            raise UserError(f"temperature {self.temperature!r} invalid; valid: a number from 0 to 2 (0: every seed the same chunk)")
        check_images(obs.images, self.cameras)
        seed = self.seed * 1000 + self._decision
        self._decision += 1
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bfloat16" else nullcontext()
        with torch.inference_mode(), autocast:
            condition, maps, current = self._encode(obs)
            decision = (self._direct if self.mode == "direct" else self._plan)(obs, condition, maps, current, seed)
        decision.actions = decision.actions[: self.replan_steps]
        return decision

    # --- internals ----------------------------------------------------------------------------------------
    def _check_value_source(self) -> None:
        if self.value_source not in VALUE_SOURCES:
            raise UserError(f"value_source {self.value_source!r} unknown; valid: {', '.join(VALUE_SOURCES)}")
        if self.value_source == "ranker" and self.meta["ranker"] is None:
            raise UserError(f"value_source 'ranker' needs a checkpoint with a ranking head; {self.checkpoint_file.name} has none "
                            "(add one with `stress train-ranker`); valid here: future, action")

    def _encode(self, obs: Observation):
        current = {c: to_tensor_images(model_image(obs.images[c], self.contract.image_size))[None] for c in self.cameras}
        proprio = torch.from_numpy((np.asarray(obs.proprio, np.float32) - self._proprio_mean) / self._proprio_std)[None]
        tokens, offsets = text_batch([obs.instruction or self.instruction])
        condition, maps = self.net.encode(current, proprio, tokens, offsets)
        return condition, maps, current

    @staticmethod
    def _noise(seeds: list[int], dim: int) -> torch.Tensor:
        return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(s)) for s in seeds])

    def _sample(self, role: str, condition, clean: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        n = len(seeds)
        noise = self._noise(seeds, self.net.dim) * (self.temperature if role == "policy" else 1.0)
        return sample(self.net, condition.expand(n, -1), role_states(role, n), clean, self.num_denoising_steps, noise).float()

    def _futures(self, x: torch.Tensor, maps, current) -> list[dict[str, np.ndarray]]:
        n = len(x)
        cams = self.cameras
        rep_maps = {c: [m.expand(n, -1, -1, -1) for m in maps[c]] for c in cams}
        rep_cur = {c: current[c].expand(n, -1, -1, -1) for c in cams}
        images = self.net.decode_future(x[:, self._slices["future"]], rep_maps, rep_cur)
        out = {c: (images[c].float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy() for c in cams}
        return [{c: out[c][i] for c in cams} for i in range(n)]

    def _actions(self, x: torch.Tensor) -> np.ndarray:
        actions = np.clip(self.contract.from_knots(x[:, self._slices["actions"]].numpy()), -1.0, 1.0).astype(np.float64)
        if self._action_low is None:
            return actions
        return self._action_low + (actions + 1.0) / 2.0 * (self._action_high - self._action_low)

    def _values(self, x: torch.Tensor) -> np.ndarray:
        return np.clip((x[:, self._slices["value"]].numpy()[:, 0] + 1) / 2, 0.0, 1.0)

    def _proprio(self, x: torch.Tensor, proprio: np.ndarray) -> np.ndarray:
        return np.asarray(proprio, np.float32) + x[:, self._slices["proprio"]].numpy() * self._delta_std

    def _direct(self, obs, condition, maps, current, seed) -> Decision:
        x = self._sample("policy", condition, torch.zeros(1, self.net.dim), [seed])
        value = float(self._values(x)[0])
        return Decision(actions=self._actions(x)[0], predicted_value=value, predicted_future=self._futures(x, maps, current)[0],
                        info={"seed": seed, "predicted_proprio": self._proprio(x, obs.proprio)[0].tolist(), "denoising_steps": self.num_denoising_steps})

    def _plan(self, obs, condition, maps, current, seed) -> Decision:
        n, nf, nv = self.n_candidates, self.n_futures, self.n_values
        seeds = [seed + i for i in range(n)]
        proposals = self._sample("policy", condition, torch.zeros(n, self.net.dim), seeds)
        actions = proposals[:, self._slices["actions"]]
        # world model: nf futures per candidate (actions clean)
        clean = torch.zeros(n * nf, self.net.dim)
        clean[:, self._slices["actions"]] = actions.repeat_interleave(nf, dim=0)
        ensemble_seed = lambda *ids: zlib.crc32(repr((seed, *ids)).encode())  # independent of N: candidate i is the same in best-of-2 and of-8
        worlds = self._sample("world", condition, clean, [ensemble_seed("future", i, j) for i in range(n) for j in range(nf)])
        # value: nv values per future, from the future (V(s')) or from the actions alone (Q(s, a))
        role = "value_action" if self.value_source == "action" else "value_future"  # the ranker reads V(s')'s ensemble
        clean = worlds.repeat_interleave(nv, dim=0)
        clean[:, self._slices["value"]] = 0.0
        values = self._values(self._sample(role, condition, clean, [ensemble_seed("value", i, j, k) for i in range(n) for j in range(nf) for k in range(nv)]))
        values = values.reshape(n, nf * nv)
        features = None
        if self.record_features or self.value_source == "ranker":
            features = candidate_features(condition, actions, worlds, values, self._slices)
        if self.value_source == "ranker":  # the head's success probability per candidate; the first on ties
            scores = torch.sigmoid(self.meta["ranker"](features.float())).float().numpy().astype(np.float64)
            chosen = int(np.argmax(scores))
        else:
            chosen, scores = best_candidate(values, self.aggregation)
        futures = self._futures(worlds[::nf], maps, current)  # the first future of each candidate
        candidates = [Candidate(actions=a, predicted_value=float(s), predicted_future=f, seed=sd, ensemble_values=v)
                      for a, s, f, sd, v in zip(self._actions(proposals), scores, futures, seeds, values)]
        return Decision(
            actions=candidates[chosen].actions, predicted_value=float(scores[chosen]), predicted_future=futures[chosen],
            candidates=candidates, chosen=chosen, aggregation=self.aggregation,
            info={"seed": seed, "candidate_values": values.round(4).tolist(), "value_source": self.value_source,
                  "predicted_proprio": self._proprio(worlds[chosen * nf : chosen * nf + 1], obs.proprio)[0].tolist(),
                  "denoising_steps": self.num_denoising_steps,
                  **({"ranker_features": features.float().numpy()} if self.record_features else {})},
        )
