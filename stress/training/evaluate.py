"""``stress evaluate-reference``: the reference model's figures on the shipped init states of its tasks.

* success per task and mode (direct, best-of-N planning) with 95 % Wilson intervals, paired on the same
  init states (both modes share each scenario but the mode, the policy seed included: ``episode_seed``),
  split into trained init states and held-out ones (40-49 are never trained on);
* value AUROC: the decision-time predicted value (direct: the policy's own value; planning: the chosen
  candidate's aggregated score) against the episode's eventual success, over every decision of these
  closed-loop episodes (none of which is training data);
* world-model error: at each decision of the first ``future_inits`` direct episodes per task, the
  simulator snapshot is restored after the executed chunk has been played to render the true future;
  PSNR / SSIM of the predicted future vs the true one, and of the current frame vs the true one (the
  copy-current-frame baseline), per camera, at the model's 64 px;
* CPU latency of one decision, policy mode and best-of-N planning (median of repeated calls on real
  observations).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from stress.core.spec import ScenarioSpec
from stress.core.metrics import auroc, psnr, ssim, wilson_interval
from stress.training.build import ALOHA_TRAIN_INITS, TRAIN_INITS
from stress.training.data import text_seed
from stress.policies.reference.model import model_image
from stress.envs import simulator_of
from stress.policies.reference.policy import ReferencePolicy, load_checkpoint
from stress.policies.reference.text import CHECKPOINT_VARIABLES
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.runners import run_specs
from stress.runners.episode import run_episode

SHIPPED_INITS = tuple(range(50))


class FutureProbe:
    """Decision hook: plays the executed chunk from the snapshot, renders the true future, restores."""

    def __init__(self, keep_examples: int = 6):
        self.rows: list[dict] = []
        self.examples: list[dict[str, np.ndarray]] = []  # (current, predicted, true) images for the picture
        self.keep_examples = keep_examples

    def __call__(self, env, snapshot, decision) -> None:
        if decision.predicted_future is None:
            return
        cameras = tuple(decision.predicted_future)  # the model's cameras
        current = {c: model_image(env.render(c)) for c in cameras}
        for action in decision.actions:
            env.step(action)
        true = {c: model_image(env.render(c)) for c in cameras}
        env.restore(snapshot)
        if len(self.examples) < self.keep_examples and len(self.rows) % 24 == 0:  # spread over episodes
            self.examples.append({"current": current, "predicted": decision.predicted_future, "true": true})
        for c in cameras:
            self.rows.append({"camera": c, "psnr": psnr(decision.predicted_future[c], true[c]), "ssim": ssim(decision.predicted_future[c], true[c]),
                              "baseline_psnr": psnr(current[c], true[c]), "baseline_ssim": ssim(current[c], true[c])})


def episode_seed(seed: int, suite: str, task: int, init: int) -> int:
    """The policy seed of one scenario: its own per task and init state, so that episodes draw independent noise
    (one seed shared by all episodes made their outcomes move together: per task, 35-100 % success on the same
    init states depending on the seed alone, docs/reference-model.md), and the same in both modes (paired).
    Below 10^6, so the policy's per-decision seeds (1000 x seed + decision) stay within torch's 32-bit seeds."""
    return text_seed(f"{seed}/{suite}/{task}/{init}") % 1_000_000


def evaluation_specs(tasks, inits, modes, n_candidates: int, aggregation: str, seed: int, options: tuple = ()) -> list[ScenarioSpec]:
    """``options``: policy options of every spec (e.g. a temperature; none: the checkpoint's defaults)."""
    specs = []
    for suite, task in tasks:
        for init in inits:
            for mode in modes:
                planning = mode == "planning"
                specs.append(ScenarioSpec(suite=suite, task_id=task, init_index=init, policy="reference", mode=mode, seed=episode_seed(seed, suite, task, init),
                                          n_candidates=n_candidates if planning else 1, aggregation=aggregation if planning else None,
                                          image_size=simulator_of(suite).default_image_size,  # what `stress run` renders (ALOHA: 224)
                                          policy_options=options))
    return specs


def evaluate(store, checkpoint: Path, tasks, inits=SHIPPED_INITS, planning_inits=SHIPPED_INITS, n_candidates: int = 8,
             aggregation: str = "average", future_inits: int = 10, workers: int = 1, seed: int = 0, progress=None, temperature: float | None = None) -> dict:
    """Run the evaluation episodes into ``store`` (resumable) and return the figures."""
    simulator = simulator_of(tasks[0][0]).name
    os.environ[CHECKPOINT_VARIABLES[simulator]] = str(Path(checkpoint).resolve())  # worker processes load it
    options = (("temperature", temperature),) if temperature is not None else ()
    direct = evaluation_specs(tasks, inits, ("direct",), n_candidates, aggregation, seed, options)
    planning = evaluation_specs(tasks, planning_inits, ("planning",), n_candidates, aggregation, seed, options)
    # world-model probe: in this process, on the first direct episodes of each task (stored like any other)
    probe, envs, policies = FutureProbe(), EnvCache(), PolicyCache()
    first = set(sorted(inits)[:future_inits])
    probed = [s for s in direct if s.init_index in first]
    futures_path = store.path / "future_errors.json"
    if futures_path.exists():
        probe.rows = json.loads(futures_path.read_text())
    else:
        try:
            for i, spec in enumerate(probed):
                result = run_episode(spec, envs, policies, on_decision=probe)
                if spec.key not in store.done_keys():
                    store.write_episode(result.row(), result.actions, result.decisions, result.decision_steps)
                if progress:
                    progress("world-model probe", i + 1, len(probed))
        finally:
            envs.close()
        futures_path.write_text(json.dumps(probe.rows))
        if probe.examples:
            save_future_picture(probe.examples, store.path / "future_examples.png")
    specs = direct + planning
    counter = {"done": len(store.done_keys())}

    def on_result(_):
        counter["done"] += 1
        if progress:
            progress("episodes", counter["done"], len(specs))

    run_specs(specs, store, workers=workers, on_result=on_result, measurement=None)  # the probe above measures the futures
    store.consolidate()
    trained = ALOHA_TRAIN_INITS if simulator == "aloha" else TRAIN_INITS
    figures = summarise(store, tasks, probe.rows, trained)
    figures["latency_ms"] = measure_latency(checkpoint, tasks[0], n_candidates, aggregation)
    figures["config"] = {"checkpoint": str(checkpoint), "n_candidates": n_candidates, "aggregation": aggregation, "seed": seed,
                         "episode_seeds": "per scenario: episode_seed(seed, suite, task, init)",
                         "temperature": temperature if temperature is not None else load_checkpoint(Path(checkpoint))[1]["temperature"],
                         "inits": [min(inits), max(inits)], "planning_inits": [min(planning_inits), max(planning_inits)] if planning_inits else None,
                         "future_inits": future_inits, "trained_inits": [min(trained), max(trained)], "suite": tasks[0][0]}
    (store.path / "evaluation.json").write_text(json.dumps(figures, indent=1))
    return figures


def summarise(store, tasks, future_rows: list[dict], trained_inits=TRAIN_INITS) -> dict:
    episodes = store.query("SELECT suite, task_id, init_index, mode, success, error, episode_key FROM episodes")
    out = {"success": [], "paired": {}, "value_auroc": {}, "future": {}}
    trained = set(trained_inits)
    for suite, task in tasks:
        for mode in ("direct", "planning"):
            rows = [e for e in episodes if (e["suite"], e["task_id"], e["mode"]) == (suite, task, mode)]
            if not rows:
                continue
            entry = {"suite": suite, "task_id": task, "mode": mode}
            for split, keep in (("all", lambda e: True), ("trained_inits", lambda e: e["init_index"] in trained), ("held_out_inits", lambda e: e["init_index"] not in trained)):
                chosen = [e for e in rows if keep(e)]
                wins = sum(bool(e["success"]) for e in chosen)
                low, high = wilson_interval(wins, len(chosen))
                entry[split] = {"n": len(chosen), "success": wins / len(chosen) if chosen else None, "ci95": [round(low, 3), round(high, 3)]}
            entry["errors"] = sum(e["error"] is not None for e in rows)
            out["success"].append(entry)
    for mode in ("direct", "planning"):
        rates = [s["all"]["success"] for s in out["success"] if s["mode"] == mode]
        if rates:
            out[f"mean_success_{mode}"] = float(np.mean(rates))
    by_key = {(e["suite"], e["task_id"], e["init_index"], e["mode"]): bool(e["success"]) for e in episodes}
    pairs = [(v, by_key[k[:3] + ("planning",)]) for k, v in by_key.items() if k[3] == "direct" and k[:3] + ("planning",) in by_key]
    if pairs:
        out["paired"] = {"n": len(pairs), "both": sum(a and b for a, b in pairs), "direct_only": sum(a and not b for a, b in pairs),
                         "planning_only": sum(b and not a for a, b in pairs), "neither": sum(not a and not b for a, b in pairs)}
    success_of = {e["episode_key"]: bool(e["success"]) for e in episodes}
    mode_of = {e["episode_key"]: e["mode"] for e in episodes}
    decisions = store.query("SELECT episode_key, pred_value FROM decisions WHERE candidate = -1") if any((store.path / "decisions").glob("*.parquet")) else []
    for mode in ("direct", "planning"):
        rows = [d for d in decisions if mode_of.get(d["episode_key"]) == mode]
        score = auroc([d["pred_value"] for d in rows], [success_of[d["episode_key"]] for d in rows]) if rows else None
        out["value_auroc"][mode] = {"decisions": len(rows), "auroc": score}
    for camera in dict.fromkeys(r["camera"] for r in future_rows):
        rows = [r for r in future_rows if r["camera"] == camera]
        if rows:
            out["future"][camera] = {"decisions": len(rows), **{k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("psnr", "ssim", "baseline_psnr", "baseline_ssim")}}
    return out


def measure_latency(checkpoint: Path, task, n_candidates: int, aggregation: str, repeats: int = 20) -> dict:
    """Median wall time of one decision on a real observation (this process, torch's default threads)."""
    sim = simulator_of(task[0])
    env = sim.env_class(*task)
    try:
        env.reset(0)
        obs = env.observe(render=True)
    finally:
        env.close()
    policy = ReferencePolicy(checkpoint, simulator=sim.name)
    out = {}
    for label, mode, n in (("policy_5_steps", "direct", 1), (f"best_of_{n_candidates}_3x5", "planning", n_candidates)):
        policy.reset(obs.instruction, 0, mode=mode, n_candidates=n, aggregation=aggregation)
        policy.act(obs)  # warm-up
        times = []
        for _ in range(repeats if mode == "direct" else max(3, repeats // 4)):
            start = time.perf_counter()
            policy.act(obs)
            times.append(time.perf_counter() - start)
        out[label] = round(1000 * float(np.median(times)), 1)
    return out


def save_future_picture(examples: list[dict], path: Path) -> None:
    """Rows: decisions; columns: current, predicted and true future for each camera (64 px, upscaled 2x)."""
    import imageio.v3 as iio

    rows = []
    for ex in examples:
        tiles = [ex[kind][camera] for camera in ex["current"] for kind in ("current", "predicted", "true")]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1))
    grid = np.concatenate(rows, axis=0).repeat(2, axis=0).repeat(2, axis=1)
    iio.imwrite(path, grid)
