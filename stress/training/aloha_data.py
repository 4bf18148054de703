"""Training data for the ALOHA reference model, from the scripted ALOHA expert (``stress.policies.aloha_expert``).

The expert is open loop: its plan is made once from the objects' poses at reset and indexed by the env's step, so
there are no DAgger labels for states off its path; the label of a state at step t is the plan's next ``CHUNK``
steps, whatever was executed before (the absolute joint targets pull a drifted arm back onto the plan: ACT's
behaviour cloning on the same scripted data). Physics is cheap (400 steps ~0.4 s) and rendering is the cost, so an
episode runs all ``MAX_STEPS`` steps once and the three cameras are rendered only every ``STRIDE`` steps. Every
rendered step up to ``MAX_STEPS - CHUNK`` is a training decision whose true future is the render ``CHUNK`` steps
later; the runner queries only every ``CHUNK`` steps, so the other offsets are augmentation (ACT trains on every
step).

Variants (labels always the clean plan):

* ``demo``: the plan executed with smooth noise ``NOISE["demo"]`` rad on the 12 arm joints (DART-style);
* ``noisy``: larger smooth noise (about 60 % of the episodes still succeed): failures for the value head;
* ``sabotage``: ``CHUNK`` steps from a random step 0-250 are replaced by the arm frozen in place or pushed off by a
  random offset (their labels are marked invalid: no expert plan for them), then the plan resumes, jumping to where
  it is by then: drops, misses, late grasps.

Init states: indexes below ``N_INIT_STATES`` are the suite's own (gym-aloha's sampler seeded with the index);
indexes from ``EXTRA_POSES_FROM`` on are more poses from the same sampler with that seed (``TrainingAlohaEnv``), so the
training set holds more cube positions than the 50 init states without touching the evaluation's held-out ones.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from stress.core.aloha import CHUNK, MAX_STEPS
from stress.envs.aloha import N_INIT_STATES, ROBOT_QPOS, AlohaEnv

import mujoco  # noqa: E402  (after stress.envs.aloha chose the GL platform)
from stress.policies.aloha_expert import plan_episode
from stress.policies.reference.model import model_image

STRIDE = 10  # steps between rendered (training) decisions
GAMMA = 0.998  # Cosmos Policy's ALOHA discount
ARM = np.r_[0:6, 7:13]  # the 12 arm joints of a 14-D action (6 + gripper per arm)
NOISE = {"demo": 0.01, "noisy": 0.04, "sabotage": 0.01}  # rad, smooth (knots every KNOT steps); measured: 0.04 -> 7/12 succeed
KNOT = 25
SABOTAGE_OFFSET = 0.15  # rad per arm joint, the "pushed off" kind
EXTRA_POSES_FROM = 100  # init indexes from here on are training-only poses (gym-aloha's sampler, seed = index)
ALOHA_VARIANTS = tuple(NOISE)


@cache
def _extra_pose(task: str, seed: int) -> np.ndarray:
    from gym_aloha.utils import sample_box_pose, sample_insertion_pose  # optional heavy dependency, as in stress.envs.aloha

    return np.asarray(sample_box_pose(seed) if task == "transfer_cube" else np.concatenate(sample_insertion_pose(seed)), np.float64)


class TrainingAlohaEnv(AlohaEnv):
    """``AlohaEnv`` with more object poses than the suite's 50: index i >= ``EXTRA_POSES_FROM`` is gym-aloha's seeded
    pose for seed i (training data only; the suite's init states are unchanged)."""

    def n_init_states(self) -> int:
        return 1 << 30

    def _set_init(self, init_index: int) -> None:
        if init_index < N_INIT_STATES:
            return super()._set_init(init_index)
        if init_index < EXTRA_POSES_FROM:
            raise ValueError(f"init index {init_index}: training poses start at {EXTRA_POSES_FROM}")
        self.data.qpos[ROBOT_QPOS:] = _extra_pose(self.task, init_index)
        mujoco.mj_forward(self.model, self.data)


def smooth_noise(rng: np.random.Generator, sigma: float, steps: int) -> np.ndarray:
    """(steps, 12) noise on the arm joints: N(0, sigma) knots every ``KNOT`` steps, linearly interpolated (i.i.d.
    per-step noise on a position target is filtered away by the actuators; a slow offset moves the arm)."""
    knots = rng.normal(0.0, sigma, size=(steps // KNOT + 2, len(ARM)))
    t = np.arange(steps) / KNOT
    i = t.astype(int)
    f = (t - i)[:, None]
    return (1 - f) * knots[i] + f * knots[i + 1]


def aloha_episode(env: AlohaEnv, init_index: int, variant: str, seed: int, image_size: int = 64) -> dict:
    """Roll the expert's plan out under ``variant``; return the shard's arrays (the format ``load_shards`` reads)."""
    if variant not in NOISE:
        raise ValueError(f"ALOHA variant {variant!r} unknown; valid: {', '.join(NOISE)}")
    rng = np.random.default_rng(seed)
    env.reset(init_index)
    plan = plan_episode(env.task, env.initial_object_qpos, MAX_STEPS + CHUNK)  # + CHUNK: a label for every rendered step
    executed = plan[:MAX_STEPS].copy()
    executed[:, ARM] += smooth_noise(rng, NOISE[variant], MAX_STEPS)
    valid = np.ones(MAX_STEPS, bool)
    if variant == "sabotage":
        start = int(rng.integers(0, 251))
        window = slice(start, start + CHUNK)
        if rng.random() < 0.5:  # frozen: the arm holds the pose it reached (the plan then jumps ahead)
            executed[window] = executed[max(0, start - 1)]
        else:  # pushed off: a random constant offset on every arm joint
            executed[window, ARM] += rng.choice([-1.0, 1.0], size=len(ARM)) * SABOTAGE_OFFSET * rng.random(len(ARM))
        executed[window, 6], executed[window, 13] = rng.choice([0.0, 1.0], size=2)  # a random gripper command
        valid[window] = False
    cameras = env.cameras
    frames = {c: [] for c in cameras}
    proprio, steps = [], []
    success_step = -1
    for t in range(MAX_STEPS + 1):
        if t % STRIDE == 0:
            obs = env.observe(render=True)
            for c in cameras:
                frames[c].append(model_image(obs.images[c], image_size))
            proprio.append(obs.proprio)
            steps.append(t)
        if t == MAX_STEPS:
            break
        if env.step(executed[t]) and success_step < 0:
            success_step = env.step_count
    decisions = [i for i, t in enumerate(steps) if t + CHUNK <= MAX_STEPS]
    starts = [steps[i] for i in decisions]
    # a decision's label is invalid if any of its own first steps was sabotaged (the state is off any plan then)
    label_valid = np.array([bool(valid[t]) for t in starts])
    padded = np.vstack([executed, np.repeat(executed[-1:], CHUNK, axis=0)])
    return {
        **{c: np.stack(frames[c]) for c in cameras},
        "proprio": np.stack(proprio).astype(np.float32),
        "decision_steps": np.array(steps, dtype=np.int32),
        "future_index": np.array([i + CHUNK // STRIDE for i in decisions], dtype=np.int32),
        "label_actions": np.stack([plan[t : t + CHUNK] for t in starts]).astype(np.float32),
        "executed_actions": np.stack([padded[t : t + CHUNK] for t in starts]).astype(np.float32),
        "label_valid": label_valid,
        "success": np.bool_(success_step >= 0),
        "success_step": np.int32(success_step),
        "max_steps": np.int32(MAX_STEPS),
        "instruction": np.str_(env.instruction),
        "variant": np.str_(variant),
        "seed": np.int64(seed),
        "perturbation": np.str_("{}"),
        "gamma": np.float64(GAMMA),
    }


def training_env(task_id: int) -> TrainingAlohaEnv:
    """Rendered at 224 px, the ALOHA runs' default, and area-resized to the model's size, as the policy does at run time."""
    return TrainingAlohaEnv("aloha", task_id, image_size=224)

