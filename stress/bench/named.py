"""The named benchmarks of ``stress bench --only NAME,...`` and the ``bench.json`` they write.

Each benchmark times one thing and returns its settings, its raw repeats (every timed repeat, not only the best) and the
figures worked out from them. ``record`` adds it to ``OUT/bench.json`` under its name, with the machine, the date and
the git revision it ran on, so a file can gather benchmarks run at different times (each says when and where);
``stress.bench.docs`` renders the tables of docs/benchmarks.md and docs/ray.md from that file. Where a figure is a
ratio, both sides are timed in the same run, repeat by repeat in turn, and the ratio is the median of the per-repeat
ratios (each taken side by side, under the same load).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scenarios.boundary import benchmark as map_benchmark
from scenarios.boundary import pair_benchmark
from scenarios.grid import grid_specs, scene_maker
from scenarios.planted import benchmark as planted_benchmark
from scenarios.samplers import SAMPLERS
from stress.bench import aloha, lerobot, libero, remote
from stress.core.errors import UserError
from stress.core.files import atomic_write
from stress.envs.cache import EnvCache
from stress.measurement.groundtruth import Measurement
from stress.policies.cache import PolicyCache
from stress.runners.episode import run_episode

BENCH_FILE = "bench.json"
ROOT = Path(__file__).resolve().parents[2]
LEROBOT_STEPS = 50  # --only lerobot: steps per episode (ACT queries at every step; one 480 x 640 top render per step)


@dataclass(frozen=True)
class Benchmark:
    name: str
    what: str
    run: Callable[[Any], dict]  # the bench command's arguments -> {"settings", "repeats", "figures"}


def _ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median of the per-repeat ratios (each repeat's two sides timed one after the other)."""
    return float(np.median([a / b for a, b in zip(numerators, denominators)]))


def side_by_side(repeats: int, **loops: Callable[[], float]) -> dict[str, list[float]]:
    """Each loop once per repeat, in turn (a, b, c, a, b, c, ...): every repeat's figures are taken under the same load."""
    out: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            out[name].append(loop())
    return out


# --- LIBERO: rendering, runner overhead, snapshot, ground truth, families ----------------------------------------
def _render(args) -> dict:
    with libero.Scene(args.suite, args.task, args.init) as scene:
        raw = side_by_side(args.repeats, on_demand_s=scene.replay_on_demand, every_step_s=scene.replay_every_step)
        steps = scene.steps
    return {"settings": {"suite": args.suite, "task": args.task, "init": args.init, "steps": steps, "image_size": 128}, "repeats": raw,
            "figures": {"on_demand_steps_per_s": steps / float(np.median(raw["on_demand_s"])),
                        "every_step_steps_per_s": steps / float(np.median(raw["every_step_s"])),
                        "speedup": _ratio(raw["every_step_s"], raw["on_demand_s"])}}


def _overhead(args) -> dict:
    with libero.Scene(args.suite, args.task, args.init) as scene:
        raw = side_by_side(args.repeats, bare_s=scene.bare_loop, runner_s=scene.runner_clean, runner_occlusion_s=scene.runner_occluded)
    return {"settings": {"suite": args.suite, "task": args.task, "init": args.init, "policy": "expert"}, "repeats": raw,
            "figures": {"runner_overhead_pct": 100 * (_ratio(raw["runner_s"], raw["bare_s"]) - 1),
                        "runner_occlusion_overhead_pct": 100 * (_ratio(raw["runner_occlusion_s"], raw["bare_s"]) - 1),
                        "bare_s": float(np.median(raw["bare_s"])), "runner_s": float(np.median(raw["runner_s"]))}}


def _snapshot(args) -> dict:
    with libero.Scene(args.suite, args.task, args.init) as scene:
        raw = {"snapshot_restore_ms": scene.snapshot_restore_ms(50 * args.repeats)}
    return {"settings": {"suite": args.suite, "task": args.task, "init": args.init}, "repeats": raw,
            "figures": {"snapshot_restore_ms": float(np.median(raw["snapshot_restore_ms"])),
                        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}}


def _groundtruth(args) -> dict:
    raw = libero.ground_truth_repeats(args.suite, args.task, args.init, args.repeats)
    med = {name: float(np.median(times)) for name, times in raw.items() if name != "decisions"}
    return {"settings": {"suite": args.suite, "task": args.task, "init": args.init, "policy": "reference", "mode": "planning", "candidates": 8,
                         "max_steps": 64, "decisions": raw["decisions"]}, "repeats": raw,
            "figures": {**med, "true_future_ms_per_candidate": 1000 * (med["all_s"] - med["plain_s"]) / (raw["decisions"] * 8),
                        "executed_extra_pct": 100 * (_ratio(raw["executed_s"], raw["plain_s"]) - 1)}}


def _families(args) -> dict:
    with libero.Scene(args.suite, args.task, args.init) as scene:
        episode_s = float(np.median([scene.replay_on_demand() for _ in range(args.repeats)]))
        costs = libero.family_costs(scene.env, args.init, scene.steps, episode_s)
    return {"settings": {"suite": args.suite, "task": args.task, "init": args.init, "severity": 3, "episode_s": episode_s},
            "repeats": {}, "figures": costs}


MAKE_RUN_INITS = 3  # `stress run`'s default --episodes, what `make run` runs


def _makerun(args) -> dict:
    """``make run``'s 24 episodes (the reference model, init states 0-2, clean + occlusion 1, 3, 5, both modes, the default
    measurement) in this process: CPU and wall seconds per episode, after one warm-up step."""
    specs = grid_specs(args.suite, [args.task], MAKE_RUN_INITS, scene_maker(["occlusion"], [1, 3, 5], "both", True, 0), "reference",
                       ["direct", "planning"], range(1), 8, "average", None, None)
    envs, policies = EnvCache(), PolicyCache()
    raw: dict[str, list] = {"episode_key": [], "scenario": [], "cpu_s": [], "wall_s": [], "decisions": [], "steps": [], "success": []}
    try:
        run_episode(replace(specs[0], max_steps=1), envs, policies)  # the scene build and the model load: start-up, not counted
        for spec in specs:
            cpu, wall = time.process_time(), time.perf_counter()
            result = run_episode(spec, envs, policies, measurement=Measurement())
            scenario = f"init {spec.init_index}, {'+'.join(f'{p.name}:{p.severity}' for p in spec.perturbations) or 'clean'}, {spec.mode}"
            for key, value in (("episode_key", spec.key), ("scenario", scenario), ("cpu_s", time.process_time() - cpu), ("wall_s", time.perf_counter() - wall),
                               ("decisions", len(result.decision_steps)), ("steps", result.steps), ("success", result.success)):
                raw[key].append(value)
    finally:
        envs.close()
    return {"settings": {"suite": args.suite, "task": args.task, "inits": MAKE_RUN_INITS, "episodes": len(specs)}, "repeats": raw,
            "figures": {"cpu_s": float(sum(raw["cpu_s"])), "wall_s": float(sum(raw["wall_s"])), "decisions": int(sum(raw["decisions"])),
                        "cpu_s_per_decision": float(sum(raw["cpu_s"]) / max(1, sum(raw["decisions"]))), "successes": int(sum(raw["success"]))}}


# --- ALOHA ----------------------------------------------------------------------------------------------------------
def _aloha(args) -> dict:
    return aloha.split(repeats=args.repeats, n_init=args.episodes)


# --- scaling: whole commands on the local pool and on Ray -----------------------------------------------------------
SCALING_TASKS = "0,1"


def _scaling_run(workers: int, backend: str, episodes: int, out: Path) -> dict:
    """One whole ``stress run --policy expert`` command: its wall-clock and CPU time, and the steady state from its
    part files' times (after every worker has finished its first episode, to the last episode)."""
    command = [sys.executable, "-m", "stress.cli", "run", "--policy", "expert", "--tasks", SCALING_TASKS, "--episodes", str(episodes),
               "--workers", str(workers), "--backend", backend, "--true-futures", "none", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    run = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    ends = sorted(p.stat().st_mtime for p in (run / "parts").glob("*.parquet"))
    first = (run / "manifest.json").stat().st_mtime
    steady = ends[workers - 1:]  # each worker's first episode (start-up, its scene build) left out
    rate = 3600 * (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 and steady[-1] > steady[0] else None
    return {"wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "folder_to_last_s": ends[-1] - first, "episodes": len(ends), "steady_episodes_per_hour": rate}


def _scaling(args, sides: tuple[tuple[str, int, str], ...]) -> dict:
    episodes = args.scaling_episodes
    raw: dict[str, list] = {name: [] for name, _, _ in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, workers, backend in sides:
                raw[name].append(_scaling_run(workers, backend, episodes, Path(tmp) / f"{name}-{repeat}"))
    pick = lambda name, key: [r[key] for r in raw[name]]
    figures = {name: {key: float(np.median(pick(name, key))) for key in ("wall_s", "cpu_s", "folder_to_last_s", "steady_episodes_per_hour")}
               for name, _, _ in sides}
    base = sides[0][0]
    for name, _, _ in sides[1:]:
        figures[name]["steady_vs_" + base] = _ratio(pick(name, "steady_episodes_per_hour"), pick(base, "steady_episodes_per_hour"))
        figures[name]["wall_vs_" + base] = _ratio(pick(name, "wall_s"), pick(base, "wall_s"))
    return {"settings": {"policy": "expert", "suite": "libero_spatial", "tasks": SCALING_TASKS, "episodes_per_task": episodes,
                         "true_futures": "none"}, "repeats": raw, "figures": figures}


def _workers(args) -> dict:
    return _scaling(args, (("local_1", 1, "local"), ("local_2", 2, "local")))


def _ray(args) -> dict:
    return _scaling(args, (("local_2", 2, "local"), ("ray_2", 2, "ray")))


# --- policy servers ---------------------------------------------------------------------------------------------------
def _remote(args) -> dict:
    figures = remote.measure(max(20, args.repeats))
    return {"settings": {"repeats": figures["repeats"]}, "repeats": {}, "figures": figures}


def _wires(args) -> dict:
    figures = remote.wires(max(20, args.repeats))
    return {"settings": {"repeats": max(20, args.repeats)}, "repeats": {}, "figures": figures}


def _lerobot(args) -> dict:
    figures = lerobot.loop_overhead(LEROBOT_STEPS, max(1, args.repeats))
    return {"settings": {"steps": LEROBOT_STEPS, "repeats": max(1, args.repeats), "suite": "aloha", "task": 0, "policy": "the tests' small ACT"},
            "repeats": {}, "figures": figures}


def _throughput(args) -> dict:
    runs = [remote.throughput(args.episodes, args.workers, args.suite, args.task, args.max_steps) for _ in range(args.repeats)]
    figures = {side: {k: float(np.median([r[side][k] for r in runs])) for k in ("episodes_per_hour", "wall_s", "mean_episode_s", "policy_ms_per_decision", "startup_s",
                                                                                 "decisions", "steps")}
               | {"suite": runs[0][side]["suite"]} for side in remote.THROUGHPUT_SIDES}
    return {"settings": {"episodes": args.episodes, "workers": args.workers, "suite": args.suite, "task": args.task, "max_steps": args.max_steps},
            "repeats": {"runs": runs}, "figures": figures}


# --- no simulator: the search's planted benchmark, the maps' threshold estimation -------------------------------------
def _planted(args) -> dict:
    results = {}
    for split, seeds in (("tune", args.tune_seeds), ("report", args.report_seeds)):
        results[split] = planted_benchmark(SAMPLERS, seeds, args.budget, args.shrinker)
        base = results[split]["random"]["violations_per_100"]
        for row in results[split].values():
            row["vs_random"] = row["violations_per_100"] / base if base else None
    return {"settings": {"tune_seeds": args.tune_seeds, "report_seeds": args.report_seeds, "budget": args.budget, "shrinker": args.shrinker},
            "repeats": {}, "figures": results}


def _maps(args) -> dict:
    return {"settings": {"map_seeds": args.map_seeds, "pair_seeds": args.pair_seeds, "widths": list(args.widths), "map_budget": args.map_budget}, "repeats": {},
            "figures": {**map_benchmark(args.map_seeds, args.widths, args.map_budget), "pairs": pair_benchmark(args.pair_seeds, args.widths, args.map_budget)}}


BENCHMARKS = {b.name: b for b in (
    Benchmark("render", "LIBERO: both cameras once per 16-step chunk vs after every step (the expert's episode replayed)", _render),
    Benchmark("overhead", "LIBERO: run_episode + storing vs a bare reset/act/step loop (expert), clean and with pixel occlusion", _overhead),
    Benchmark("snapshot", "LIBERO: snapshot + restore at a decision point; the process's peak memory", _snapshot),
    Benchmark("groundtruth", "LIBERO: a best-of-8 reference episode without and with each counterfactual measurement", _groundtruth),
    Benchmark("families", "LIBERO: applying each model/pixels family per episode, and its reset with realisation check", _families),
    Benchmark("makerun", "LIBERO: `make run`'s 24 episodes in one process, CPU and wall seconds per episode", _makerun),
    Benchmark("aloha", "ALOHA: render on demand, image size and shadows apart; snapshot; the expert's success", _aloha),
    Benchmark("workers", "Whole `stress run --policy expert` commands, 1 vs 2 local workers: wall, CPU, steady state", _workers),
    Benchmark("ray", "Whole `stress run --policy expert` commands, 2 local workers vs 2 Ray actors: wall, CPU, steady state", _ray),
    Benchmark("remote", "The stress-policy/1 round trip on 127.0.0.1 vs an in-process call (two 256 px images, a best-of-8 reply)", _remote),
    Benchmark("wires", "Round trip per wire on 127.0.0.1 (stress-policy/1, openpi's), two 224 px images, a 10 x 7 chunk", _wires),
    Benchmark("throughput", "Episodes per hour of --workers processes fed by one policy server, per wire (stress-policy/1, openpi's, deploy.py's), vs in-process", _throughput),
    Benchmark("lerobot", "ALOHA: the suite's loop around a served LeRobot ACT vs LeRobot's own lerobot_eval rollout (needs $STRESS_LEROBOT_PYTHON)", _lerobot),
    Benchmark("planted", "The search's planted-failure benchmark: every sampler on tuning and held-out landscapes (no simulator)", _planted),
    Benchmark("maps", "Failure-boundary maps: adaptive threshold estimation vs a 5-level grid on synthetic curves and, for pairs of axes, on synthetic surfaces (no simulator)", _maps),
)}
DEFAULT = ("render", "overhead", "snapshot", "groundtruth", "families")  # plain `stress bench`


def parse_only(text: str) -> list[str]:
    """``--only``: comma-separated names, or ``all``; UserError naming the bad one and the valid ones."""
    names = list(BENCHMARKS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in BENCHMARKS:
            raise UserError(f"--only {name!r} unknown; valid: {', '.join(BENCHMARKS)}, or all")
    if not names:
        raise UserError(f"--only {text!r} names no benchmark; valid: {', '.join(BENCHMARKS)}, or all")
    return names


def revision() -> str | None:
    """The checkout's git revision (with ``-dirty`` when it has uncommitted changes); None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")) if rev.returncode == 0 else None


def machine() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3 if hasattr(os, "sysconf") else None
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "memory_gib": round(memory, 1) if memory else None, "python": platform.python_version()}


def run_named(name: str, args) -> dict:
    """Run one benchmark; its entry as bench.json holds it."""
    load = os.getloadavg()[0]
    started = datetime.now(timezone.utc)
    entry = BENCHMARKS[name].run(args)
    return {"date": started.isoformat(timespec="seconds"), "seconds": (datetime.now(timezone.utc) - started).total_seconds(),
            "machine": machine(), "revision": revision(), "load_average": [load, os.getloadavg()[0]], **entry}


def record(out: Path, name: str, entry: dict) -> Path:
    """Add (or replace) ``name`` in ``out/bench.json``, atomically; the other benchmarks there are kept."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / BENCH_FILE
    data = load(path) if path.is_file() else {"benchmarks": {}}
    data["benchmarks"][name] = entry
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True, default=_plain) + "\n"))
    return path


def load(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"bench file {str(path)!r} unreadable ({exc}); valid: a bench.json written by stress bench --only") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict):
        raise UserError(f"bench file {str(path)!r} has no 'benchmarks' object; valid: a bench.json written by stress bench --only")
    return data


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
