"""Counterfactual ground truth at each decision, from the simulator snapshot the runner takes there.

For the executed chunk, or (``true_futures="all"``) every best-of-N candidate, restore the snapshot,
execute the chunk in the (perturbed) simulator and render the **true future**; compare it with the
model's predicted future, and the current frame with it (the copy-current-frame baseline). Images are
compared in the space the policy sees (pixel perturbations applied) at the prediction's resolution.
Each measured chunk costs one chunk of physics (~0.3-0.6 s on a 2-core CPU: robosuite steps dominate)
and two renders, so "all" multiplies a best-of-8 episode's cost several times.

At ``rollouts`` decisions per episode (spread evenly over the step budget), each candidate is also
continued with the *direct* policy to the end of the episode: its **true outcome** (1 success, 0 not).
All candidates of a decision are continued with the same policy seed (common random numbers), so their
outcomes differ by the chunk alone.

The executed chunk alone (``true_futures="executed"``, at a decision with no rollout) is not executed twice: its true
future is the state the episode itself reaches at the chunk's end, so the measurement waits for it (``chunk_done``)
and reads the frame the next observation renders anyway (``settle``). Only a chunk the episode cuts short (success or
the step budget) is finished on a snapshot, rendered and restored. The figures are the same as measuring from the
restored snapshot (a restored snapshot steps and renders exactly like the original; tests/test_groundtruth.py checks
it), at no extra physics and, for a policy that renders anyway, no extra render.

For the executed chunk the agentview frames themselves are kept too (``frames``: the frame the policy
saw, the predicted and the true future, at the prediction's resolution; about 12 kB each at 64 px), so
the failure gallery can show them without calling the policy again.

The snapshot is restored afterwards and the hook touches neither the episode's policy nor its random
state: the episode's trajectory is bit-identical with and without these measurements.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from stress.envs.base import SimEnv, SimulatorFault
from stress.core.errors import UserError
from stress.core.metrics import psnr, ssim
from stress.core.policy import Decision


TRUE_FUTURES = ("executed", "all", "none")


@dataclass(frozen=True)
class Measurement:
    """What the runner measures besides the episode itself (a run setting, not part of the scenario key:
    the episode is the same with or without it)."""

    true_futures: str = "executed"  # "executed" chunk only, "all" candidates, or "none"
    rollouts: int = 0  # decisions per episode whose candidates are continued to the end (expensive)

    def __post_init__(self):
        if self.true_futures not in TRUE_FUTURES:
            raise UserError(f"true futures {self.true_futures!r} unknown; valid: {', '.join(TRUE_FUTURES)}")
        if not isinstance(self.rollouts, int) or self.rollouts < 0:
            raise UserError(f"counterfactual rollouts {self.rollouts!r} invalid; valid: 0 or more")

    def rollout_decisions(self, max_steps: int, chunk: int) -> set[int]:
        """Indices of the decisions continued to the end: ``rollouts`` of them, evenly over the budget."""
        n = -(-max_steps // chunk)
        if self.rollouts <= 0:
            return set()
        return {int(round(x)) for x in np.linspace(0, n - 1, min(self.rollouts, n))}


def execute(env: SimEnv, actions: np.ndarray, max_steps: int) -> bool:
    """Execute a chunk open-loop; stop at success or the step budget. Returns success."""
    for action in actions:
        if env.step(action):
            return True
        if env.step_count >= max_steps:
            break
    return False


def to_resolution(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    return image if image.shape == like.shape else cv2.resize(image, (like.shape[1], like.shape[0]), interpolation=cv2.INTER_AREA)


MODEL_SIZE, CROP_AREA = 224, 0.9


def cosmos_view(image: np.ndarray, jpeg: bool = True) -> np.ndarray:
    """What Cosmos Policy makes of a camera image before its model sees it (and so the view its predicted
    futures live in): JPEG q95, resize to 224, the centre crop of 90 % of the area (212 px), resize back to
    224 (Cosmos Policy's LIBERO preprocessing). ``jpeg=False`` for masks (geometry only)."""
    from io import BytesIO

    from PIL import Image

    if jpeg:
        buffer = BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        image = np.asarray(Image.open(BytesIO(buffer.getvalue())).convert("RGB"))
    pil = Image.fromarray(image).resize((MODEL_SIZE, MODEL_SIZE), Image.BILINEAR)
    side = int(MODEL_SIZE * CROP_AREA ** 0.5)  # 212
    left = (MODEL_SIZE - side) // 2
    return np.asarray(pil.crop((left, left, left + side, left + side)).resize((MODEL_SIZE, MODEL_SIZE), Image.BILINEAR))


def cosmos_view_no_jpeg(image: np.ndarray, jpeg: bool = False) -> np.ndarray:
    """Cosmos Policy's view without the JPEG step: its ALOHA setting (``use_jpeg_compression`` False)."""
    return cosmos_view(image, jpeg=False)


# backends whose predicted futures are in their model's own view name it in ``Decision.info["future_view"]``;
# the true (and current) frames then go through the same transform before PSNR/SSIM
FUTURE_VIEWS = {"cosmos": cosmos_view, "cosmos-nojpeg": cosmos_view_no_jpeg}


def future_errors(predicted: dict[str, np.ndarray], true: dict[str, np.ndarray], current: dict[str, np.ndarray],
                  occluded: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """PSNR/SSIM of predicted vs true future and of current vs true future (baseline), per camera and mean.
    With ``occluded`` masks (camera -> HxW bool, where an occluder hides the scene), PSNR is also split
    into the occluded pixels and the rest, averaged over the cameras the occluder covers."""
    out: dict[str, float] = {}
    split: dict[str, list[float]] = {k: [] for k in ("future_psnr_occluded", "future_psnr_visible", "baseline_psnr_occluded", "baseline_psnr_visible")}
    cameras = [c for c in true if c in predicted]  # the cameras the model predicts
    for c in cameras:
        p = predicted[c]
        t, now = to_resolution(true[c], p), to_resolution(current[c], p)
        out[f"future_psnr_{c}"], out[f"future_ssim_{c}"] = psnr(p, t), ssim(p, t)
        out[f"baseline_psnr_{c}"], out[f"baseline_ssim_{c}"] = psnr(now, t), ssim(now, t)
        if occluded is not None and occluded[c].any():
            mask = to_resolution(occluded[c].astype(np.float32), p[..., 0]) > 0.5
            if mask.any() and (~mask).any():
                for name, image in (("future", p), ("baseline", now)):
                    split[f"{name}_psnr_occluded"].append(psnr(image[mask], t[mask]))
                    split[f"{name}_psnr_visible"].append(psnr(image[~mask], t[~mask]))
    for name in ("future_psnr", "future_ssim", "baseline_psnr", "baseline_ssim"):
        out[name] = float(np.mean([out[f"{name}_{c}"] for c in cameras]))
    out.update({k: float(np.mean(v)) for k, v in split.items() if v})
    return out


def occlusion_masks(env: SimEnv) -> dict[str, np.ndarray] | None:
    """Per camera, the pixels an occluding perturbation hides (pixel patch or scene box); None when none does."""
    masks = {}
    for p in env.perturbations:
        for camera in env.cameras:
            mask = p.family.occluded_pixels(env, p.params, camera)
            if mask is not None:
                masks[camera] = masks[camera] | mask if camera in masks else mask
    if not masks:
        return None
    return {c: masks.get(c, np.zeros(env.image_shape, dtype=bool)) for c in env.cameras}


@dataclass
class _Pending:
    """The executed chunk of a decision, measured once the episode has executed it."""

    step: int
    index: int  # the chosen candidate, or -1 without candidates
    actions: Any
    predicted: dict[str, np.ndarray] | None
    current: dict[str, np.ndarray] | None
    masks: dict[str, np.ndarray] | None
    view: Any


class GroundTruth:
    """Decision hook (``run_episode(on_decision=...)``) that measures each decision against the simulator.

    ``continuation()`` returns a fresh direct-mode policy (perturbation wrappers applied) for the
    rollouts; it is never the episode's own policy object."""

    def __init__(self, measurement: Measurement, episode_key: str, max_steps: int, continuation, chunk: int = 16):
        self.measurement, self.key, self.max_steps = measurement, episode_key, max_steps
        self.continuation = continuation
        self.rollout_at = measurement.rollout_decisions(max_steps, chunk)
        self.by_step: dict[int, dict[int, dict[str, float]]] = {}  # step -> candidate (-1 executed) -> figures
        self.frames: dict[int, dict[str, np.ndarray]] = {}  # step -> observed / predicted / true scene-camera frame of the executed chunk
        self.seconds = 0.0
        self._decision = 0
        self._pending: _Pending | None = None  # the executed chunk whose end the episode has yet to reach
        self._main = None

    def __call__(self, env: SimEnv, snapshot, decision: Decision) -> None:
        start = time.perf_counter()
        self._main = env.cameras[0]
        try:
            self._measure(env, snapshot, decision)
        finally:
            env.restore(snapshot)
            self._decision += 1
            self.seconds += time.perf_counter() - start

    def _measure(self, env, snapshot, decision: Decision) -> None:
        if decision.predicted_value is None:
            return  # a backend without predictions (the expert): nothing to compare, no rows to fill
        step = snapshot.step
        rollout = self._decision in self.rollout_at
        items = [(i, c.actions, c.predicted_future) for i, c in enumerate(decision.candidates)] or [(-1, decision.actions, decision.predicted_future)]
        executed = {-1, decision.chosen}
        mode = self.measurement.true_futures
        wanted = lambda i, predicted: predicted is not None and (mode == "all" or (mode == "executed" and i in executed))
        if not (rollout or any(wanted(i, p) for i, _, p in items)):
            return
        current = masks = None
        if any(wanted(i, p) for i, _, p in items):
            # the frame the policy just saw (its render is reused: the simulator has not moved since)
            current = env.observed_images() or {c: env.perturb_pixels(env.render(c), c) for c in env.cameras}
            masks = occlusion_masks(env)
        view = FUTURE_VIEWS.get(decision.info.get("future_view"))
        if view is not None and current is not None:
            current = {c: view(image) for c, image in current.items()}
            if masks is not None:
                masks = {c: view(m.astype(np.uint8) * 255, jpeg=False) > 127 for c, m in masks.items()}
        if not rollout and mode == "executed":  # the episode executes this chunk next: measure its end then (chunk_done, settle)
            i, actions, predicted = next(item for item in items if wanted(item[0], item[2]))
            self._pending = _Pending(step, i, actions, predicted, current, masks, view)
            self.by_step[step] = {}
            return
        figures: dict[int, dict[str, float]] = {}
        for i, actions, predicted in items:
            if not (rollout or wanted(i, predicted)):
                continue
            env.restore(snapshot)
            row: dict[str, float] = {}
            try:
                done = False
                for action in actions:  # the whole chunk: the prediction is for the chunk's end
                    done = env.step(action) or done
                if wanted(i, predicted):
                    true = {c: env.perturb_pixels(env.render(c), c) for c in env.cameras}
                    row.update(self._compare(step, i in executed, predicted, true, current, masks, view))
                if rollout:
                    row["true_outcome"] = float(self._continue(env, snapshot, done))
            except SimulatorFault:
                if rollout:
                    row["true_outcome"] = 0.0  # the chunk itself broke the simulation
            figures[i] = row
        if decision.candidates and decision.chosen in figures:
            figures[-1] = dict(figures[decision.chosen])  # the executed decision is the chosen candidate
        self.by_step[step] = figures

    def _compare(self, step: int, executed: bool, predicted, true, current, masks, view) -> dict[str, float]:
        """The figures of one measured chunk from its true future frames; the executed chunk's frames kept for the gallery."""
        if view is not None:
            true = {c: view(image) for c, image in true.items()}
        main = self._main  # the scene camera (LIBERO: agentview, ALOHA: top): the gallery shows it
        if executed and main in predicted:
            p = predicted[main]
            self.frames[step] = {"observed": to_resolution(current[main], p), "predicted": np.asarray(p, dtype=np.uint8),
                                 "true": to_resolution(true[main], p)}
        return future_errors(predicted, true, current, masks)

    def chunk_done(self, env: SimEnv, executed: int) -> None:
        """The episode has executed ``executed`` actions of the pending chunk. Cut short (success, the step budget), the
        rest is executed on a snapshot for the measurement, rendered, and the episode's state restored."""
        pending = self._pending
        if pending is None or executed >= len(pending.actions):
            return  # a whole chunk: its end is the next observation (settle)
        start = time.perf_counter()
        after = env.snapshot()
        try:
            for action in pending.actions[executed:]:
                env.step(action)
            self._settle(env)
        except SimulatorFault:
            self._pending = None  # as when measured from the decision's snapshot: no figures for this chunk
        finally:
            env.restore(after)
            self.seconds += time.perf_counter() - start

    def settle(self, env: SimEnv) -> None:
        """Measure the pending executed chunk at its end, the simulator's current state: the frame the last
        observation rendered (reused), else one render per camera."""
        start = time.perf_counter()
        self._settle(env)
        self.seconds += time.perf_counter() - start

    def _settle(self, env: SimEnv) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        true = env.observed_images() or {c: env.perturb_pixels(env.render(c), c) for c in env.cameras}
        row = self._compare(pending.step, True, pending.predicted, true, pending.current, pending.masks, pending.view)
        self.by_step[pending.step] = {pending.index: row, -1: dict(row)} if pending.index != -1 else {-1: row}

    def _continue(self, env, snapshot, done: bool) -> bool:
        """Continue from after the chunk with the direct policy to the end of the budget."""
        if done:
            return True
        if env.step_count >= self.max_steps:
            return False
        policy = self.continuation()
        policy.reset(env.instruction, zlib.crc32(f"{self.key}/{snapshot.step}".encode()), mode="direct")
        while env.step_count < self.max_steps:
            env.begin_chunk()
            if execute(env, policy.act(env.observe(render=policy.uses_images, cameras=getattr(policy, "cameras", None))).actions, self.max_steps):
                return True
        return False
