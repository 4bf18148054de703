"""ALOHA figures: render-on-demand vs gym-aloha's stock loop, snapshot + restore, the expert's success table.

- render on demand: the expert's episode with the three cameras (``top``, ``left_wrist``, ``right_wrist``)
  rendered at 224 px once per 50-step chunk (one policy query), shadows off: what ``AlohaEnv`` does; and
  the same cameras after every step, to separate render on demand from image size and shadows;
- stock: ``gym.make("gym_aloha/Aloha...-v0")`` stepping the same actions, which renders three 640x480
  cameras (top, angle, front_close) after every step, shadows on;
- snapshot + restore: ``mj_getState``/``mj_setState(INTEGRATION)`` + ``mj_forward``, mid-episode;
- the expert: success (gym-aloha's reward 4) over init states 0..n-1 per task, the first success step and
  the time per episode (plan + replay, no rendering).
- the expert under the state and event families (``family_table``, ``python -m stress.bench.aloha families
  [N]``): success at severities 1, 3, 5 over init states 0..N-1 per task, through the runner.

``measure`` returns a JSON-able dict; ``stress.cli`` can print it (``stress bench --aloha``).
"""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone

import numpy as np

from stress.core.spec import PerturbationSpec, ScenarioSpec
from stress.envs.aloha import CAMERAS, CHUNK, TASKS, AlohaEnv
from stress.policies.aloha_expert import AlohaExpertPolicy, plan_episode
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode

STOCK_IDS = {"transfer_cube": "gym_aloha/AlohaTransferCube-v0", "insertion": "gym_aloha/AlohaInsertion-v0"}


def _expert_actions(env: AlohaEnv, init: int) -> np.ndarray:
    env.reset(init)
    return plan_episode(env.task, env.initial_object_qpos, env.max_steps)


def render_on_demand_steps_per_s(env: AlohaEnv, init: int, actions: np.ndarray, every: int = CHUNK) -> float:
    """Steps/s with the three cameras rendered before every ``every``-th step (one policy query per chunk)."""
    env.reset(init)
    start = time.perf_counter()
    for i, action in enumerate(actions):
        if i % every == 0:
            env.observe(render=True, cameras=CAMERAS)
        env.step(action)
    return len(actions) / (time.perf_counter() - start)


def no_render_steps_per_s(env: AlohaEnv, init: int, actions: np.ndarray) -> float:
    env.reset(init)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return len(actions) / (time.perf_counter() - start)


def stock_steps_per_s(task: str, init: int, actions: np.ndarray, shadows: bool = True) -> float:
    """gym-aloha's own loop (renders top/angle/front_close at 640x480 after each step) on ``actions``; ``shadows``
    False: its lights cast none (the one difference, to time shadows apart)."""
    import gym_aloha  # noqa: F401  (registers the envs)
    import gymnasium as gym

    env = gym.make(STOCK_IDS[task], obs_type="pixels_agent_pos", max_episode_steps=len(actions) + 1)
    env.reset(seed=init)
    if not shadows:
        env.unwrapped._env.physics.model.light_castshadow[:] = 0
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return len(actions) / elapsed


def snapshot_restore_ms(env: AlohaEnv, init: int, actions: np.ndarray, repeats: int = 1000) -> float:
    env.reset(init)
    for action in actions[:100]:
        env.step(action)
    start = time.perf_counter()
    for _ in range(repeats):
        env.restore(env.snapshot())
    return (time.perf_counter() - start) / repeats * 1e3


def expert_table(n_init: int = 50, tasks=TASKS) -> dict:
    """Per task: successes over init states 0..n_init-1, first-success steps, seconds per episode."""
    out = {}
    policy = AlohaExpertPolicy()
    for task in tasks:
        env = AlohaEnv("aloha", task)
        rows = []
        for init in range(n_init):
            start = time.perf_counter()
            env.reset(init)
            policy.reset(env.instruction, init)
            first = None
            while env.step_count < env.max_steps and first is None:
                for action in policy.act(env.observe(render=False)).actions:
                    if env.step(action):
                        first = env.step_count
                        break
                    if env.step_count >= env.max_steps:
                        break
            rows.append({"init": init, "success": first is not None, "first_success_step": first,
                         "seconds": time.perf_counter() - start})
        env.close()
        steps = [r["first_success_step"] for r in rows if r["success"]]
        out[task] = {"successes": sum(r["success"] for r in rows), "episodes": n_init,
                     "first_success_step": [min(steps), max(steps)] if steps else None,
                     "seconds_per_episode": float(np.mean([r["seconds"] for r in rows])),
                     "failed_inits": [r["init"] for r in rows if not r["success"]]}
    return out


STATE_FAMILIES = ("object_pose", "robot_init", "mid_chunk_push")


def family_table(n_init: int = 10, severities=(1, 3, 5), families=STATE_FAMILIES, tasks=TASKS) -> dict:
    """aloha-expert under each state / event family through the runner: per (family, severity, task) the
    successes over init states 0..n_init-1 (perturbation seed = init index), the episodes refused as invalid
    scenes (after 10 samples) or errored, those whose first sample was re-sampled, the failure signatures,
    and for mid_chunk_push how many events fired."""
    envs, policies, out = EnvCache(), PolicyCache(), {}
    for task_id, task in enumerate(TASKS):
        if task not in tasks:
            continue
        for name in families:
            for severity in severities:
                rows = []
                for init in range(n_init):
                    spec = ScenarioSpec(suite="aloha", task_id=task_id, init_index=init, policy="aloha-expert", image_size=224,
                                        perturbations=(PerturbationSpec(name, severity, seed=init),))
                    rows.append(run_episode(spec, envs, policies))
                ok = [r for r in rows if r.error is None]
                out[f"{name}:{severity}:{task}"] = {
                    "successes": sum(r.success for r in ok), "episodes": len(ok),
                    "invalid": sum(bool(r.error and r.error.startswith("invalid_scene")) for r in rows),
                    # valid scenes found only after re-sampling an invalid first sample (state families)
                    "resampled": sum(r.perturbations[0]["realisation"].get("attempts", 1) > 1 for r in ok),
                    "errors": sorted({r.error for r in rows if r.error and not r.error.startswith("invalid_scene")}),
                    "failures": {f: sum(r.failure == f for r in ok) for f in sorted({r.failure for r in ok}) if f != "success"},
                    "fired": sum(bool(r.perturbations[0]["realisation"].get("fired")) for r in ok) if name == "mid_chunk_push" else None,
                }
    envs.close()
    return out


def measure(task: str = "transfer_cube", init: int = 0, stock_steps: int = 50, repeats: int = 2, n_init: int = 50) -> dict:
    """All ALOHA figures (best of ``repeats`` for the timed loops; the stock loop is timed on the first
    ``stock_steps`` expert actions, ~4.5 steps/s)."""
    env = AlohaEnv("aloha", task)
    actions = _expert_actions(env, init)
    on_demand = max(render_on_demand_steps_per_s(env, init, actions) for _ in range(repeats))
    # the same 224 px shadowless cameras after every step: separates render on demand from size and shadows
    every_step = max(render_on_demand_steps_per_s(env, init, actions[:stock_steps], every=1) for _ in range(repeats))
    bare = max(no_render_steps_per_s(env, init, actions) for _ in range(repeats))
    snap_ms = min(snapshot_restore_ms(env, init, actions) for _ in range(repeats))
    env.close()
    stock = max(stock_steps_per_s(task, init, actions[:stock_steps]) for _ in range(repeats))
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.system()} {platform.release()}, {platform.python_version()}",
        "task": task, "init": init, "episode_steps": len(actions),
        "steps_per_s": {"render_on_demand_3cams_224_per_chunk": on_demand, "stock_3cams_640x480_every_step": stock,
                        "3cams_224_every_step": every_step, "no_render": bare, "speedup": on_demand / stock},
        "snapshot_restore_ms": snap_ms,
        "expert": expert_table(n_init) if n_init else None,
    }


def split(task: str = "transfer_cube", init: int = 0, steps: int = 50, repeats: int = 2, n_init: int = 10) -> dict:
    """The render-on-demand speed-up over gym-aloha's stock loop, split into its three factors, each a ratio of two loops
    timed one after the other per repeat on the first ``steps`` expert actions (stress.bench.named, ``--only aloha``):
    shadows (stock 640x480 cameras with vs without shadows), image size and cameras (stock 640x480 without shadows vs
    ours at 224 px, both after every step), and render on demand alone (ours after every step vs once per 50-step chunk).
    The three factors multiply to the whole speed-up of each repeat."""
    env = AlohaEnv("aloha", task)
    actions = _expert_actions(env, init)
    loops = {"stock_shadows": lambda: stock_steps_per_s(task, init, actions[:steps]),
             "stock_no_shadows": lambda: stock_steps_per_s(task, init, actions[:steps], shadows=False),
             "ours_224_every_step": lambda: render_on_demand_steps_per_s(env, init, actions[:steps], every=1),
             "ours_224_on_demand": lambda: render_on_demand_steps_per_s(env, init, actions[:steps]),
             "ours_224_on_demand_episode": lambda: render_on_demand_steps_per_s(env, init, actions),
             "no_render": lambda: no_render_steps_per_s(env, init, actions)}
    raw: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            raw[name].append(loop())
    snap = [snapshot_restore_ms(env, init, actions) for _ in range(repeats)]
    env.close()
    ratio = lambda a, b: float(np.median([x / y for x, y in zip(raw[a], raw[b])]))
    figures = {name: float(np.median(r)) for name, r in raw.items()}
    figures.update({"shadows_factor": ratio("stock_no_shadows", "stock_shadows"), "size_factor": ratio("ours_224_every_step", "stock_no_shadows"),
                    "on_demand_factor": ratio("ours_224_on_demand", "ours_224_every_step"), "speedup": ratio("ours_224_on_demand", "stock_shadows"),
                    "snapshot_restore_ms": float(np.median(snap))})
    return {"settings": {"task": task, "init": init, "steps": steps, "episode_steps": len(actions), "chunk": CHUNK, "n_init": n_init},
            "repeats": {**raw, "snapshot_restore_ms": snap}, "figures": figures, "expert": expert_table(n_init) if n_init else None}


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:2] == ["families"]:  # families [N]: the expert under the state and event families
        print(json.dumps(family_table(int(sys.argv[2]) if len(sys.argv) > 2 else 10), indent=1))
    else:
        print(json.dumps(measure(n_init=int(sys.argv[1]) if len(sys.argv) > 1 else 50), indent=1))  # arg: init states per task (0: no expert table)
