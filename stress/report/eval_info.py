"""LeRobot's ``eval_info.json``: what the gallery folder and a protocol run write, so LeRobot tooling reads them."""

from __future__ import annotations

from collections import defaultdict


def eval_info(episodes: list[dict], order: dict[str, int], videos: dict[str, str]) -> dict:
    """LeRobot's ``eval_info.json`` shape: ``per_episode`` rows, ``per_task`` (with ``pc_success``),
    ``per_group`` (suite) and ``overall``; pc_success in percent over the valid episodes (all settings
    and perturbations of the run together; ours breaks them down)."""
    valid = sorted((e for e in episodes if e["error"] is None), key=lambda e: (e["suite"], e["task_id"], order.get(e["episode_key"], len(order)), e["episode_key"]))
    per_episode, per_task = [], defaultdict(list)
    for e in valid:
        per_task[(e["suite"], e["task_id"])].append(e)
    pc = lambda rows: 100.0 * sum(bool(e["success"]) for e in rows) / len(rows) if rows else float("nan")
    for ix, e in enumerate(valid):
        per_episode.append({"episode_ix": ix, "task_group": e["suite"], "task_id": e["task_id"], "sum_reward": float(bool(e["success"])),
                            "max_reward": float(bool(e["success"])), "success": bool(e["success"]), "seed": e["seed"], "episode_key": e["episode_key"],
                            "init_index": e["init_index"], "perturbation": e["perturbation"], "setting": e["setting"], "policy": e["policy"],
                            "failure": e.get("failure"), "steps": e["steps"], "video_path": videos.get(e["episode_key"])})
    tasks = []
    for (suite, task), rows in sorted(per_task.items()):
        paths = [videos[e["episode_key"]] for e in rows if e["episode_key"] in videos]
        tasks.append({"task_group": suite, "task_id": task, "metrics": {
            "sum_rewards": [float(bool(e["success"])) for e in rows], "max_rewards": [float(bool(e["success"])) for e in rows],
            "successes": [bool(e["success"]) for e in rows], "pc_success": pc(rows), "n_episodes": len(rows), "video_paths": sorted(paths)}})
    groups = {}
    for suite in sorted({e["suite"] for e in valid}):
        rows = [e for e in valid if e["suite"] == suite]
        groups[suite] = {"avg_sum_reward": pc(rows) / 100, "avg_max_reward": pc(rows) / 100, "pc_success": pc(rows), "n_episodes": len(rows),
                         "video_paths": sorted(videos[e["episode_key"]] for e in rows if e["episode_key"] in videos)}
    eval_s = float(sum(e["wall_s"] or 0.0 for e in valid))
    overall = {"avg_sum_reward": pc(valid) / 100 if valid else None, "avg_max_reward": pc(valid) / 100 if valid else None,
               "pc_success": pc(valid) if valid else None, "n_episodes": len(valid), "eval_s": round(eval_s, 3),
               "eval_ep_s": round(eval_s / len(valid), 3) if valid else None, "video_paths": sorted(videos.values())}
    return {"per_episode": per_episode, "per_task": tasks, "per_group": groups, "overall": overall}
