"""The benchmark tables of docs/benchmarks.md and docs/ray.md, rendered from a ``bench.json`` (``stress bench --docs FILE``).

A table lives between two marker lines naming its benchmark; regenerating rewrites exactly those blocks whose benchmark
the file holds, and leaves every other line as it was. Each block says the command, date, revision, machine and load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from scenarios.boundary import pair_parts

DOCS = (Path("docs") / "benchmarks.md", Path("docs") / "ray.md")


def markers(name: str) -> tuple[str, str]:
    return (f"<!-- bench {name}: generated from bench.json by `stress bench --docs FILE`; do not edit -->", f"<!-- end of bench {name} -->")


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _n(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _render(e: dict) -> str:
    f, s = e["figures"], e["settings"]
    return _table(("figure", "measured"), [
        (f"env steps/s, both 128 px cameras once per 16-step chunk (render on demand), {s['steps']}-step expert episode", _n(f["on_demand_steps_per_s"])),
        ("env steps/s, both cameras after every step", _n(f["every_step_steps_per_s"])),
        ("speed-up of render on demand (median of the per-repeat ratios)", f"**{_n(f['speedup'])}×**")])


def _overhead(e: dict) -> str:
    f = e["figures"]
    return _table(("figure", "measured"), [
        ("bare reset/act/step loop, expert (s)", _n(f["bare_s"], ".2f")),
        ("runner: hooks, recording, Parquet + actions store (s)", _n(f["runner_s"], ".2f")),
        ("runner overhead vs the bare loop (target ≤ 5 %)", f"**{_n(f['runner_overhead_pct'])} %**"),
        ("the same with pixel occlusion (its realisation check renders both cameras once)", f"{_n(f['runner_occlusion_overhead_pct'])} %")])


def _snapshot(e: dict) -> str:
    f = e["figures"]
    return _table(("figure", "measured"), [("snapshot + restore (`mj_getState`/`mj_setState` + controller and observable state), median", f"{_n(f['snapshot_restore_ms'], '.2f')} ms"),
                                          ("peak resident memory of the benchmark's process (one LIBERO scene, expert)", f"{_n(f['peak_rss_gb'], '.2f')} GB")])


def _groundtruth(e: dict) -> str:
    f, s = e["figures"], e["settings"]
    return _table(("measurement", f"best-of-8 episode, {s['max_steps']} steps, {s['decisions']} decisions (median)"), [
        ("none (`--true-futures none`)", f"{_n(f['plain_s'], '.2f')} s"),
        ("true future of the executed chunk (`executed`, the default)", f"{_n(f['executed_s'], '.2f')} s ({_n(f['executed_extra_pct'], '+.0f')} %)"),
        ("true future of every candidate (`all`)", f"{_n(f['all_s'], '.2f')} s ({_n(f['true_future_ms_per_candidate'], '.0f')} ms per candidate)"),
        ("+ every candidate of 1 decision continued to the end (`--counterfactual-rollouts 1`)", f"{_n(f['rollout_s'], '.2f')} s")])


def _families(e: dict) -> str:
    return _table(("family", "layer", "applying it, per episode", "share of the episode", "reset incl. realisation check"),
                  [(name, c["layer"], f"{_n(c['apply_ms_per_episode'])} ms", f"{_n(c['percent_of_episode'], '.2f')} %", f"{_n(c['reset_and_check_ms'], '.0f')} ms")
                   for name, c in sorted(e["figures"].items())])


def _makerun(e: dict) -> str:
    f, s, r = e["figures"], e["settings"], e["repeats"]
    return _table((f"`make run`'s episodes, init states 0-{s['inits'] - 1} ({s['episodes']} episodes)", "CPU s", "wall s", "decisions", "success"),
                  [(scenario, _n(cpu, ".2f"), _n(wall, ".2f"), d, "yes" if ok else "no") for scenario, cpu, wall, d, ok in
                   zip(r["scenario"], r["cpu_s"], r["wall_s"], r["decisions"], r["success"])]
                  + [("**all**", f"**{_n(f['cpu_s'], '.1f')}**", _n(f["wall_s"], ".1f"), f["decisions"], f"{f['successes']}/{s['episodes']}"),
                     ("CPU s per decision", _n(f["cpu_s_per_decision"], ".2f"), "", "", "")])


def _aloha(e: dict) -> str:
    f, s = e["figures"], e["settings"]
    rows = [("gym-aloha's stock loop: top, angle, front_close at 640×480 after every step, shadows", _n(f["stock_shadows"]), ""),
            ("the same without shadows", _n(f["stock_no_shadows"]), f"shadows: **{_n(f['shadows_factor'])}×**"),
            ("ours: top, left_wrist, right_wrist at 224 px after every step, no shadows", _n(f["ours_224_every_step"]), f"image size and cameras: **{_n(f['size_factor'])}×**"),
            (f"ours, rendered once per {s['chunk']}-step chunk (render on demand)", _n(f["ours_224_on_demand"]), f"render on demand alone: **{_n(f['on_demand_factor'])}×**"),
            ("all three (stock with shadows → ours on demand)", "", f"**{_n(f['speedup'])}×**"),
            (f"ours on demand, the whole {s['episode_steps']}-step episode", _n(f["ours_224_on_demand_episode"]), ""),
            ("no rendering", _n(f["no_render"]), ""),
            ("snapshot + restore (ms)", _n(f["snapshot_restore_ms"], ".2f"), "")]
    text = _table((f"env steps/s, `transfer_cube` init {s['init']}, first {s['steps']} expert steps", "measured", "factor (median of per-repeat ratios)"), rows)
    expert = e.get("expert")
    if expert:
        text += "\n\n" + _table(("task", "expert successes", "seconds per episode"),
                                [(task, f"{r['successes']}/{r['episodes']}", _n(r.get("seconds_per_episode"), ".2f")) for task, r in expert.items()])
    return text


def _scaling(e: dict, names: dict[str, str]) -> str:
    f, s = e["figures"], e["settings"]
    base = next(iter(names))
    rows = []
    for name, label in names.items():
        r = f[name]
        rows.append((label, _n(r["wall_s"]), _n(r["cpu_s"]), _n(r["folder_to_last_s"]), f"**{_n(r['steady_episodes_per_hour'], ',.0f')}**",
                     "1" if name == base else f"{_n(r['steady_vs_' + base], '.2f')}× (whole command {_n(r['wall_vs_' + base], '.2f')}×)"))
    episodes = 2 * s["episodes_per_task"]
    title = f"`stress run --policy expert --tasks {s['tasks']} --episodes {s['episodes_per_task']}` ({episodes} episodes), median of {len(e['repeats'][base])} repeats"
    return _table((title, "whole command (s)", "CPU s (command + its processes)", "manifest to last episode (s)", "episodes per hour (steady)", f"vs {names[base]}"), rows)


def _workers(e: dict) -> str:
    return _scaling(e, {"local_1": "1 local worker (in-process)", "local_2": "2 local workers"})


def _ray(e: dict) -> str:
    return _scaling(e, {"local_2": "2 local workers", "ray_2": "2 Ray actors"})


def _remote(e: dict) -> str:
    f = e["figures"]
    return _table(("figure", "measured"), [("in-process call", f"{_n(f['in_process_ms'], '.3f')} ms"),
                                          ("socket round trip, median (target ≤ 5 ms)", f"**{_n(f['socket_ms_median'])} ms**"),
                                          ("socket round trip, 95th percentile", f"{_n(f['socket_ms_p95'])} ms")])


def _wires(e: dict) -> str:
    rows = []
    for name, r in sorted(e["figures"].items()):
        if isinstance(r, dict) and "median_ms" in r:
            rows.append((f"`{name}`", f"**{_n(r['median_ms'], '.2f')} ms**", f"{_n(r.get('p95_ms'), '.2f')} ms"))
    return _table(("client → wire", "median", "95th percentile"), rows)


THROUGHPUT_COLUMNS = (("in_process", "in-process"), ("served", "1 server + workers (stress-policy/1)"), ("openpi", "openpi's wire"),
                      ("cosmos_deploy", "deploy.py's wire (ALOHA, stand-in)"))


def _throughput(e: dict) -> str:
    f, s = e["figures"], e["settings"]
    keys = (("episodes per hour (after start-up)", "episodes_per_hour", ",.0f"), ("wall-clock for the episodes (s)", "wall_s", ".1f"),
            ("mean episode, one worker (s)", "mean_episode_s", ".1f"), ("decisions (all episodes)", "decisions", ".0f"),
            ("policy time per decision, as the worker sees it (ms)", "policy_ms_per_decision", ".1f"), ("start-up: pool, scenes, model loads (s)", "startup_s", ".1f"))
    columns = [(side, label) for side, label in THROUGHPUT_COLUMNS if side in f]  # older entries: in-process and stress-policy/1 only
    rows = [(label, *(_n(f[side].get(k), fmt) for side, _ in columns)) for label, k, fmt in keys if any(f[side].get(k) is not None for side, _ in columns)]
    return _table((f"{s['episodes']} clean direct episodes, {s['workers']} workers", *(label for _, label in columns)), rows)


def _lerobot(e: dict) -> str:
    f, s = e["figures"], e["settings"]
    if "skipped" in f:
        return f"Skipped: {f['skipped']}."
    return _table((f"{s['steps']}-step transfer_cube episodes, {s['policy']}, {s['repeats']} timed each", "median (s)", "each (s)"),
                  [("LeRobot's own `lerobot_eval.rollout` (its gym_aloha env)", _n(f["lerobot_median_s"], ".2f"), ", ".join(_n(x, ".2f") for x in f["lerobot_rollout_s"])),
                   ("the suite's `--policy lerobot` episode (served, ALOHA adapter)", _n(f["suite_median_s"], ".2f"), ", ".join(_n(x, ".2f") for x in f["suite_episode_s"])),
                   ("overhead of the suite's loop", _n(f["overhead"], "+.1%"), "")])


def _planted(e: dict) -> str:
    report, s = e["figures"]["report"], e["settings"]
    return _table((f"sampler (held-out seeds, {len(s['report_seeds'])} landscapes, budget {s['budget']})", "modes found @100", "recorded modes", "own set", "violations/100",
                   "× random", "findings", "1-minimal"),
                  [(name, _n(r.get("modes_100"), ".0%"), _n(r.get("recorded_modes")), _n(r.get("own_set"), ".0%"), _n(r["violations_per_100"]), _n(r.get("vs_random"), ".2f"),
                    r.get("findings"), r.get("one_minimal"))
                   for name, r in sorted(report.items())])


def _maps(e: dict) -> str:
    rows = []
    for width, by in sorted(e["figures"]["by_width"].items()):
        for design in ("adaptive", "grid"):
            r = by[design]
            rows.append((width, design, _n(r["median_episodes"], ".0f"), f"{r['reached']}/{len(e['settings']['map_seeds'])}", _n(r["coverage"], ".0%"), _n(r["median_error"], ".3f")))
    table = _table(("target width", "design", "median episodes", "reached", "coverage", "median abs. error"), rows)
    pairs = e["figures"].get("pairs")
    if pairs is None:  # a bench.json from before the pairs' benchmark
        return table
    rows = []
    for width, by in sorted(pairs["by_width"].items()):
        for part in pair_parts(pairs["pair_levels"]):
            paired = by["paired"] if part == "whole pair" else by["paired_parts"][part]
            cells = [f"{by[d][part]['median_episodes']:.0f} / {by[d][part]['reached']} / {_n(by[d].get(part, {}).get('coverage'), '.0%')}" for d in pairs["designs"]]
            rows.append((width, part, *cells, f"{paired['adaptive_episodes']} vs {paired['grid_episodes']} ({paired['n']})", _n(paired["median_saved"], ".0%")))
    seeds = e["settings"]["pair_seeds"]
    return (f"{table}\n\nPair maps on {len(seeds)} synthetic surfaces (seeds {seeds[0]}-{seeds[-1]}): the second axis alone, then the first at "
            f"{pairs['pair_levels']} levels of the second; per design: median episodes / reached (of {len(seeds)}) / coverage (the whole pair: no coverage).\n\n" +
            _table(("target width", "part", *pairs["designs"], "both reached: adaptive vs grid episodes (cases)", "median saved"), rows))


RENDERERS: dict[str, Callable[[dict], str]] = {"render": _render, "overhead": _overhead, "snapshot": _snapshot, "groundtruth": _groundtruth,
                                               "families": _families, "makerun": _makerun, "aloha": _aloha, "workers": _workers, "ray": _ray, "remote": _remote,
                                               "wires": _wires, "throughput": _throughput, "lerobot": _lerobot, "planted": _planted, "maps": _maps}


def block(name: str, entry: dict) -> str:
    """A benchmark's generated block: where it was measured, then its table."""
    m = entry["machine"]
    load = entry.get("load_average") or [None, None]
    where = (f"Measured by `stress bench --only {name}` on {entry['date'][:10]} ({entry['date'][11:16]} UTC), revision {entry.get('revision') or 'unknown'}, "
             f"{m.get('cpus')}-core {m.get('machine')}, {m.get('memory_gib')} GiB, Python {m.get('python')}; load average {_n(load[0], '.1f')} before, "
             f"{_n(load[1], '.1f')} after; {entry['seconds']:.0f} s.")
    return f"{where}\n\n{RENDERERS[name](entry)}"


def with_tables(text: str, benchmarks: dict[str, dict]) -> str:
    """``text`` with the block of every benchmark in ``benchmarks`` that it has markers for rewritten."""
    for name, entry in benchmarks.items():
        if name not in RENDERERS:
            continue
        begin, end = markers(name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
        generated = f"{begin}\n{block(name, entry)}\n{end}"
        text = pattern.sub(lambda _, generated=generated: generated, text)
    return text


def regenerate(root: Path, data: dict) -> list[Path]:
    """Rewrite the marked tables of docs/benchmarks.md and docs/ray.md under ``root`` from a bench.json's data; the files changed."""
    changed = []
    for doc in DOCS:
        path = Path(root) / doc
        text = path.read_text()
        new = with_tables(text, data["benchmarks"])
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed
