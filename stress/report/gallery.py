"""``stress gallery RUN``: a static failure gallery of a run, ``RUN/gallery/index.html`` + assets.

What it shows (docs/gallery.md): what was run, the degradation tables, the failed episodes grouped into
failure modes (signature x perturbation family, and the property for search findings), one card per
failed episode (replayed video beside its clean twin, failure onset, realised parameters, value trace,
predicted vs true future frames, best-of-N candidates) and one per search finding.

The site is plain files: jinja2 with autoescaping, relative links, no network request of any kind, so
it opens from ``file://``; no time of generation is written and everything is sorted, so regenerating
it gives the same bytes. Videos are replays of the recorded actions (the policy is never called), rendered
for the ``videos`` worst cards only (default 4; every card shows the stored frames at once), in worker
processes, and cached by episode key: a second build renders nothing already there and shows every cached video.
The folder doubles as a LeRobot eval output: ``eval_info.json`` and ``videos/<suite>_<task>/eval_episode_<n>.mp4``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shlex
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stress.core.errors import UserError
from stress.core.files import atomic_write
from stress.core.metrics import psnr
from stress.core.spec import ScenarioSpec
from stress.envs import simulator_of
from stress.envs.cache import EnvCache
from stress.report.degradation import degradation, load
from stress.report.degradation_plot import save_degradation_plot
from stress.report.alarm import alarms_by_episode, stored_alarm
from stress.report.language import language_sensitivity
from stress.report.maps import gallery_rows, load_map, save_map_plot
from stress.report.eval_info import eval_info
from stress.report.summary import summarise
from stress.runners.pool import InProcessPool, ProcessPool, run_each
from stress.runners.replay import render_episode
from stress.store import RunStore

TEMPLATES = Path(__file__).with_name("templates")
ASSETS = ("gallery.css", "gallery.js")
DEFAULT_VIDEOS = 4  # cards whose videos a build renders unless told (--videos): a replay costs minutes, the rest is seconds
FRAME_SCALE = 2  # 64 px predicted frames are shown at 128 px
WORST_PSNR_FRAMES = 2  # decisions shown where the world model was furthest off (plus the last before the failure)
CHUNK_HINT = {"selection": "--counterfactual-rollouts 1", "world_model": "--true-futures executed (the default) and a policy with a world model",
              "value": "a policy that predicts values (e.g. --policy reference)", "direct_vs_planning": "--mode both",
              "robustness": "a clean baseline (leave out --no-baseline)", "seeds": "--policy-seeds 2"}


@dataclass
class GalleryResult:
    path: Path  # the gallery's index.html
    failures: int
    cards: int  # failed episodes with a full card
    rendered: int  # videos rendered by this build
    cached: int  # videos already there from an earlier build
    missing: list[str] = field(default_factory=list)  # one line per video that could not be made


# --- output folder -----------------------------------------------------------------------------------
def prepare_out(out: Path) -> Path:
    """Create the gallery folder and prove it writable; UserError (exit 2) naming the problem otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"gallery folder {str(out)!r} is a file; give a folder with --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write the gallery to {str(out)!r} ({exc.strerror or exc}); give a writable folder with --out") from None
    return out


def _write_bytes(path: Path, data: bytes) -> None:
    """Atomic, and untouched when the bytes are the same (regeneration leaves files as they were)."""
    if path.is_file() and path.read_bytes() == data:
        return
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), mode=0o644)  # a gallery is for sharing


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n"


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)


def _finite(value) -> float | None:
    return None if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) else float(value)


# --- reading the run ---------------------------------------------------------------------------------
def family_of(label: str) -> str:
    """'occlusion:3+lighting:2' -> 'lighting+occlusion'; 'clean' stays."""
    if label == "clean":
        return "clean"
    return "+".join(sorted({part.split(":")[0] for part in label.split("+")}))


def _twin_key(e: dict) -> tuple:
    return (e["suite"], e["task_id"], e["init_index"], e["policy"], e["setting"], e["seed"])


def _load(store: RunStore) -> tuple[list[dict], list[dict], dict[str, int]]:
    """All stored episodes (errored ones too), the decision rows, and each episode's place in the manifest."""
    episodes = store.query("SELECT * FROM episodes ORDER BY episode_key")  # fixed order: the picture and tables must not depend on the scan
    decisions = store.query("SELECT * FROM decisions ORDER BY episode_key, step, candidate") if (store.path / "decisions").is_dir() and any((store.path / "decisions").glob("*.parquet")) else []
    order = {}
    for i, spec in enumerate(store.manifest.get("specs", [])):
        try:
            order.setdefault(ScenarioSpec.from_dict(spec).key, i)
        except (UserError, TypeError, ValueError):
            continue
    return episodes, decisions, order


def load_findings(run: Path) -> list[dict]:
    """``RUN/findings/*.json`` of a search run, read defensively: a missing or ill-typed field is left out."""
    folder = Path(run) / "findings"
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        text = lambda k: str(data[k]) if isinstance(data.get(k), (str, int, float)) and not isinstance(data.get(k), bool) else None
        finding = {"id": text("id") or path.stem, "file": path.name, "property": text("property"), "verdict": text("verdict"),
                   "failure": text("failure") if not isinstance(data.get("failure"), (dict, list)) else _compact(data["failure"]),
                   "one_minimal": data.get("one_minimal") if isinstance(data.get("one_minimal"), bool) else None,
                   "replay_command": text("replay_command"), "replay": None, "original": _scenarios(data.get("original")),
                   "shrunk": _scenarios(data.get("shrunk")), "shrink_path": []}
        replay = data.get("replay")
        if isinstance(replay, dict) and all(isinstance(replay.get(k), int) for k in ("reproduced", "of")):
            finding["replay"] = {"reproduced": replay["reproduced"], "of": replay["of"]}
        if isinstance(data.get("shrink_path"), list):
            for step in data["shrink_path"]:
                if isinstance(step, dict):
                    finding["shrink_path"].append({"step": step.get("step") if isinstance(step.get("step"), int) else None,
                                                   "change": _compact(step["change"]) if "change" in step else None,
                                                   "violated": step.get("violated") if isinstance(step.get("violated"), bool) else None,
                                                   "episode_keys": _keys(step.get("episode_keys"))})
        finding["anchor"] = "finding-" + _slug(finding["id"])
        out.append(finding)
    return out


def _keys(value) -> list[str]:
    return [k for k in value if isinstance(k, str)] if isinstance(value, list) else []


def _scenarios(value) -> dict:
    """A finding's 'original' / 'shrunk': a list of ScenarioSpec dicts plus 'episode_keys'; or a dict holding them."""
    specs, keys = [], []
    if isinstance(value, dict):
        keys = _keys(value.get("episode_keys"))
        value = value.get("specs", value.get("scenarios", []))
        if isinstance(value, dict):  # variant -> spec, as `stress search` writes them
            value = [dict(spec, variant=variant) for variant, spec in sorted(value.items()) if isinstance(spec, dict)]
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and "episode_keys" in item and len(item) == 1:
                keys += _keys(item["episode_keys"])
            elif isinstance(item, dict):
                keys += _keys(item.get("episode_keys"))
                specs.append({"label": _spec_label(item), "text": _compact({k: v for k, v in item.items() if k != "episode_keys"})})
    return {"specs": specs, "episode_keys": keys}


def _spec_label(spec: dict) -> str:
    parts = [f"{spec.get('suite', '?')} task {spec.get('task_id', '?')} init {spec.get('init_index', '?')}"]
    for p in spec.get("perturbations") or []:
        if isinstance(p, dict):
            params = p.get("params")
            parts.append(f"{p.get('name', '?')}:{p.get('severity', '?')}" + (f" {_compact(params)}" if params else ""))
    return ", ".join(parts)


def _slug(text: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in text)[:40]
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _compact(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=_json_default, separators=(", ", ": "))


# --- cards -------------------------------------------------------------------------------------------
def _records(episode: dict) -> list[dict]:
    """The realised perturbations of an episode: name, severity, parameters and realisation check as rows."""
    try:
        records = json.loads(episode.get("perturbations") or "[]")
    except json.JSONDecodeError:
        return []
    out = []
    for r in records if isinstance(records, list) else []:
        if not isinstance(r, dict):
            continue
        params = r.get("params") if isinstance(r.get("params"), dict) else {}
        realisation = r.get("realisation") if isinstance(r.get("realisation"), dict) else {}
        rest = {k: v for k, v in r.items() if k not in ("name", "severity", "params", "realisation")}
        told = realisation.get("instruction")  # the language family: the instruction the policy was told
        instruction = None if not isinstance(told, str) else {
            "told": told, "original": str(realisation.get("original", "")), "grounding": bool(realisation.get("grounding"))}
        out.append({"name": str(r.get("name", "?")), "severity": r.get("severity"), "instruction": instruction,
                    "params": [(k, _compact(v)) for k, v in sorted(params.items())],
                    "realisation": [(k, _compact(v)) for k, v in sorted(realisation.items())],
                    "other": [(k, _compact(v)) for k, v in sorted(rest.items())]})
    return out


def _rank_key(card: dict) -> tuple:
    """Worst first: failures the perturbation caused (clean twin succeeded), then other perturbed ones,
    then clean failures; within those the lowest severity, then the most over-confident value, then the key."""
    kind = 0 if card["twin"] and card["twin"]["success"] else 1 if card["perturbation"] != "clean" else 2
    confidence = card["mean_value"] if card["mean_value"] is not None else -1.0
    return kind, card["severity"], -confidence, card["key"]


def _value_svg(points: list[dict], steps: int, onset: int | None, width: int = 420, height: int = 130) -> dict | None:
    """Coordinates of the value-trace plot (an inline SVG drawn by the template): predicted value at each
    executed decision against the realised value, the failure onset as a vertical line."""
    points = [p for p in points if p["pred"] is not None]
    if not points:
        return None
    left, right, top, bottom = 34, 8, 8, 22
    span = max(steps, max(p["step"] for p in points), 1)
    x = lambda s: left + (width - left - right) * s / span
    y = lambda v: top + (height - top - bottom) * (1.0 - min(max(v, 0.0), 1.0))
    fmt = lambda v: f"{v:.1f}"
    pred = [(fmt(x(p["step"])), fmt(y(p["pred"])), p) for p in points]
    realised = [(fmt(x(p["step"])), fmt(y(p["realised"]))) for p in points if p["realised"] is not None]
    return {"width": width, "height": height, "left": left, "right": width - right, "top": top, "bottom": height - bottom,
            "pred_line": " ".join(f"{a},{b}" for a, b, _ in pred), "pred_points": [{"x": a, "y": b, "step": p["step"], "pred": p["pred"],
                                                                                     "realised": p["realised"]} for a, b, p in pred],
            "realised_line": " ".join(f"{a},{b}" for a, b in realised),
            "onset_x": fmt(x(onset)) if onset is not None else None, "y_ticks": [(fmt(y(v)), f"{v:.1f}") for v in (0.0, 0.5, 1.0)],
            "x_ticks": [(fmt(x(s)), str(s)) for s in sorted({0, span})]}


def _frame_strip(images: list[np.ndarray]) -> np.ndarray:
    """Images side by side, upscaled, 4 px white gaps."""
    scaled = [np.repeat(np.repeat(im, FRAME_SCALE, axis=0), FRAME_SCALE, axis=1) for im in images]
    gap = np.full((scaled[0].shape[0], 4, 3), 255, dtype=np.uint8)
    parts = []
    for i, im in enumerate(scaled):
        parts += [gap, im] if i else [im]
    return np.concatenate(parts, axis=1)


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def _future_frames(store: RunStore, out: Path, card: dict, rows: list[dict]) -> None:
    """Predicted vs true future at the worst-PSNR decisions and at the last decision before the failure
    (PNG: observed | predicted | true, agentview), and a flip-book of the frames the policy saw."""
    frames = store.frames(card["key"])
    if frames is None or not len(frames.get("steps", [])):
        card["frames_note"] = ("the run stored no predicted frames for this episode (a run from before frame storage, "
                               "--true-futures none, or a policy without a world model)")
        return
    steps = [int(s) for s in frames["steps"]]
    by_step = {r["step"]: r for r in rows}
    psnrs = {}
    for i, s in enumerate(steps):
        stored = _finite(by_step.get(s, {}).get("future_psnr_agentview"))
        psnrs[s] = stored if stored is not None else psnr(frames["predicted"][i], frames["true"][i])
    chosen: dict[int, list[str]] = defaultdict(list)
    for s in sorted(steps, key=lambda s: (psnrs[s], s))[:WORST_PSNR_FRAMES]:
        chosen[s].append("world model furthest off")
    limit = card["onset"] if card["onset"] is not None else card["steps"]
    before = [s for s in steps if s <= limit]
    if before:
        chosen[before[-1]].append("last decision before the failure" if card["onset"] is not None else "last decision")
    card["frames"] = []
    for s in sorted(chosen):
        i = steps.index(s)
        name = f"frames/{card['key']}_{s:04d}.png"
        _write_bytes(out / name, _png_bytes(_frame_strip([frames["observed"][i], frames["predicted"][i], frames["true"][i]])))
        row = by_step.get(s, {})
        card["frames"].append({"step": s, "src": name, "why": ", ".join(chosen[s]), "psnr": psnrs[s],
                               "baseline_psnr": _finite(row.get("baseline_psnr_agentview")), "ssim": _finite(row.get("future_ssim_agentview"))})
    _flipbook(out, card, frames)


def _flipbook(out: Path, card: dict, frames: dict[str, np.ndarray]) -> None:
    """One PNG of the agentview frames the policy saw at each measured decision: a look at the episode
    without any replay (compact cards beyond --max-cards get it too)."""
    flip = f"frames/{card['key']}_flipbook.png"
    _write_bytes(out / flip, _png_bytes(_frame_strip(list(frames["observed"]))))
    card["flipbook"] = {"src": flip, "steps": [int(s) for s in frames["steps"]]}


def _candidates(rows: list[dict]) -> list[dict]:
    """Best-of-N: per decision, each candidate's predicted value, true outcome where measured, the chosen one."""
    by_step = defaultdict(list)
    for r in rows:
        if r["candidate"] >= 0:
            by_step[r["step"]].append(r)
    out = []
    for step in sorted(by_step):
        cands = sorted(by_step[step], key=lambda r: r["candidate"])
        out.append({"step": step, "candidates": [{"index": r["candidate"], "pred": _finite(r["pred_value"]), "chosen": bool(r["chosen"]),
                                                  "true": _finite(r.get("true_outcome"))} for r in cands]})
    return out


# --- rendering ---------------------------------------------------------------------------------------
class _Renderer:
    """A render worker (``stress.runners.pool``): replays stored episodes into videos, keeping its env between them."""

    def __init__(self):
        self.envs = EnvCache()

    def render(self, run: str, key: str, video: str) -> dict:
        """Replay one episode into ``video``; returns its sidecar record (or the error)."""
        store = RunStore(Path(run))
        target = Path(video)
        # not atomic_write: one replay makes two files, and ffmpeg picks the container from the name's extension
        tmp, poster = target.with_name(f".{target.stem}.rendering.mp4"), target.with_name(f".{target.stem}.poster.png")
        try:
            result = render_episode(store, key, tmp, self.envs, poster=poster)
        except Exception as exc:  # one bad episode must not lose the gallery: its card says why
            self.envs.close()  # the env may be in an unknown state
            self.envs = EnvCache()
            tmp.unlink(missing_ok=True)
            poster.unlink(missing_ok=True)
            return {"episode_key": key, "error": f"{type(exc).__name__}: {exc}"[:300]}
        target.with_suffix(".json").unlink(missing_ok=True)  # a stale sidecar must never vouch for the new video
        os.replace(poster, target.with_suffix(".png"))
        os.replace(tmp, target)
        record = {"episode_key": key, "success": result.success, "steps": result.steps, "recorded_success": result.recorded_success,
                  "recorded_steps": result.recorded_steps, "matches": result.matches, "failure_step": result.failure_step}
        _write_text(target.with_suffix(".json"), _json_text(record))  # written last: its presence means the video is done
        return record

    def close(self) -> None:
        self.envs.close()


def _render_all(store: RunStore, jobs: list[tuple[str, Path]], workers: int, progress: Callable[[int, int], None] | None) -> dict[str, dict]:
    """Render the jobs (episode key, video) in ``workers`` processes (one job or one worker: in this process)."""
    results: dict[str, dict] = {}
    total = len(jobs)
    if progress:
        progress(0, total)
    if not jobs:
        return results

    def done(index: int, record) -> None:
        key = jobs[index][0]
        if isinstance(record, Exception):  # a worker that died (simulator segfault)
            record = {"episode_key": key, "error": f"{type(record).__name__}: {record}"[:300]}
        results[key] = record
        if progress:
            progress(len(results), total)

    with InProcessPool(_Renderer) if workers <= 1 or total == 1 else ProcessPool(min(workers, total), _Renderer) as pool:
        run_each(pool, "render", [(str(store.path), key, str(video)) for key, video in jobs], done)
    return results


def _video_names(episodes: list[dict], order: dict[str, int]) -> dict[str, str]:
    """LeRobot names: ``videos/<suite>_<task>/eval_episode_<n>.mp4``, n the episode's index within its task
    (manifest order, so stable across builds of the same run)."""
    by_task = defaultdict(list)
    for e in episodes:
        by_task[(e["suite"], e["task_id"])].append(e)
    names = {}
    for (suite, task), rows in by_task.items():
        rows.sort(key=lambda e: (order.get(e["episode_key"], len(order)), e["episode_key"]))
        for n, e in enumerate(rows):
            names[e["episode_key"]] = f"videos/{suite}_{task}/eval_episode_{n}.mp4"
    return names


def _cached(out: Path, names: dict[str, str]) -> dict[str, dict]:
    """Videos of earlier builds, by episode key (sidecar JSON beside each mp4). One whose episode got
    another number (the run grew) is moved to its new name."""
    found: dict[str, tuple[Path, dict]] = {}
    for sidecar in sorted((out / "videos").glob("*/eval_episode_*.json")) if (out / "videos").is_dir() else []:
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        video = sidecar.with_suffix(".mp4")
        if isinstance(record, dict) and "episode_key" in record and "error" not in record and video.is_file():
            found.setdefault(record["episode_key"], (video, record))
    moves = [(found[k][0], out / names[k]) for k in found if k in names and found[k][0] != out / names[k]]
    suffixes = (".png", ".mp4", ".json")  # poster, video, and the sidecar last
    for i, (video, _) in enumerate(moves):  # two phases: a new name may be another video's old one
        for suffix in suffixes:
            if video.with_suffix(suffix).is_file():
                os.replace(video.with_suffix(suffix), video.with_name(f".moving-{i}{suffix}"))
    for i, (video, target) in enumerate(moves):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.with_suffix(".json").unlink(missing_ok=True)
        for suffix in suffixes:
            if video.with_name(f".moving-{i}{suffix}").is_file():
                os.replace(video.with_name(f".moving-{i}{suffix}"), target.with_suffix(suffix))
    return {k: record for k, (_, record) in found.items() if k in names}


# --- the build ---------------------------------------------------------------------------------------
def build_gallery(run: Path, out: Path | None = None, workers: int = 1, max_cards: int | None = None,
                  progress: Callable[[int, int], None] | None = None, videos: int | None = DEFAULT_VIDEOS) -> GalleryResult:
    """Write the gallery of run folder ``run`` into ``out`` (default ``RUN/gallery``). ``videos``: render the videos of
    that many worst full cards (and their clean twins); None: of every full card. Cached videos are shown whatever it is."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    store = RunStore.open(run)
    if max_cards is not None and max_cards < 0:
        raise UserError(f"--max-cards {max_cards} invalid; valid: 0 or more")
    if videos is not None and videos < 0:
        raise UserError(f"--videos {videos} invalid; valid: 0 or more, or all")
    if workers < 1:
        raise UserError(f"--workers {workers} invalid; valid: 1 or more")
    if not store.done_keys():
        raise UserError(f"run {str(store.path)!r} has no finished episode yet; continue it with `stress run --resume {store.path}`")
    out = prepare_out(Path(out) if out is not None else store.path / "gallery")
    manifest = store.manifest
    episodes, decisions, order = _load(store)
    valid = [e for e in episodes if e["error"] is None]
    valid_keys = {e["episode_key"] for e in valid}
    _, joined = load(store)  # the valid episodes' decision rows with their group, as `stress show` reads them
    tables = degradation(valid, joined)
    summary = summarise(store)
    findings = load_findings(store.path)
    alarm = stored_alarm(store.path)  # `stress alarm RUN` written: each failure card says when each alarm fired
    alarms_of = alarms_by_episode(alarm) if alarm else {}
    finding_of = {}
    for f in findings:
        for key in f["shrunk"]["episode_keys"]:
            finding_of.setdefault(key, f)

    # degradation picture (the same function as `stress show`), inside the gallery so the folder stands alone
    if valid:
        picture = io.BytesIO()
        save_degradation_plot(valid, joined, tables, picture)
        _write_bytes(out / "assets" / "degradation.png", picture.getvalue())

    # cards: one per failed episode, worst first
    by_key = _index(episodes)
    clean_twins = {_twin_key(e): e for e in valid if e["perturbation"] == "clean"}
    rows_of = defaultdict(list)
    for d in decisions:
        rows_of[d["episode_key"]].append(d)
    run_text = str(store.path)
    cards = []
    for e in valid:
        if e["success"]:
            continue
        key = e["episode_key"]
        executed = sorted((r for r in rows_of[key] if r["candidate"] == -1), key=lambda r: r["step"])
        values = [v for v in (_finite(r["pred_value"]) for r in executed) if v is not None]
        twin = clean_twins.get(_twin_key(e)) if e["perturbation"] != "clean" else None
        finding = finding_of.get(key)
        cards.append({
            "key": key, "suite": e["suite"], "task_id": e["task_id"], "init_index": e["init_index"], "policy": e["policy"], "mode": e["mode"],
            "setting": e["setting"], "perturbation": e["perturbation"], "family": family_of(e["perturbation"]), "severity": e["severity"],
            "seed": e["seed"], "steps": e["steps"], "signature": e.get("failure") or "unknown", "onset": e.get("failure_step"),
            "decisions": e.get("decisions"), "records": _records(e), "property": finding["property"] if finding else None,
            "finding": finding["anchor"] if finding else None,
            "replay_command": f"stress replay {shlex.quote(run_text)} {key}",
            "mean_value": float(np.mean(values)) if values else None,
            "twin": {"key": twin["episode_key"], "success": bool(twin["success"]), "steps": twin["steps"], "signature": twin.get("failure")} if twin else None,
            "rows": executed, "all_rows": rows_of[key], "alarms": alarms_of.get(key, []),
        })
    cards.sort(key=_rank_key)
    for rank, card in enumerate(cards):
        card["rank"] = rank
        card["full"] = max_cards is None or rank < max_cards

    # videos: rendered for the `videos` worst full cards, their clean twins (one video however many cards show it) and the
    # findings' shrunk episodes; the other full cards show a video an earlier build left, else say how to render theirs
    names = _video_names(episodes, order)
    wanted, shown = [], []
    for card in cards:
        if card["full"]:
            pair = [card["key"]] + ([card["twin"]["key"]] if card["twin"] else [])
            shown += pair
            if videos is None or card["rank"] < videos:
                wanted += pair
    for f in findings:
        wanted += [k for k in f["shrunk"]["episode_keys"] if k in valid_keys]
    by_place = lambda k: (by_key[k]["suite"], by_key[k]["task_id"], by_key[k]["init_index"], k)
    wanted = sorted(set(wanted), key=by_place)  # an init state's episodes (an episode and its twin) next to each other: one worker's env serves them
    cached = _cached(out, names)
    shown = sorted(set(wanted) | {k for k in shown if k in cached}, key=by_place)
    has_actions = {k: (store.path / "actions" / f"{k}.npz").is_file() for k in shown}
    jobs = [(k, out / names[k]) for k in wanted if has_actions[k] and k not in cached]
    rendered = _render_all(store, jobs, workers, progress)
    media: dict[str, dict] = {}
    missing = []
    all_command = f"stress gallery {shlex.quote(run_text)} --videos all" + (f" --out {shlex.quote(str(out))}" if out != store.path / "gallery" else "")
    for card in cards:
        for k in [card["key"]] + ([card["twin"]["key"]] if card["twin"] else []):
            if card["full"] and k not in shown:
                media[k] = {"src": None, "why": f"no video rendered: this build renders the videos of the {videos} worst cards only (--videos {videos}); "
                                                f"render every card's with `{all_command}`, or this episode's alone with "
                                                f"`stress replay {shlex.quote(run_text)} {k}`"}
    for k in shown:
        record = cached.get(k) or rendered.get(k)
        if not has_actions[k]:
            media[k] = {"src": None, "why": f"no video: the recorded actions of this episode are missing (actions/{k}.npz)"}
        elif record is None or "error" in record:
            why = f"no video: the replay failed ({record['error'] if record else 'not rendered'})"
            media[k] = {"src": None, "why": why}
            missing.append(f"{k}: {why}")
        else:
            poster = names[k][:-len(".mp4")] + ".png"
            media[k] = {"src": names[k], "poster": poster if (out / poster).is_file() else None, "why": None, "matches": record.get("matches", True), "replay_steps": record.get("steps"),
                         "replay_success": record.get("success"), "failure_step": record.get("failure_step")}
    for card in cards:
        card["video"] = media.get(card["key"])
        if card["twin"]:
            card["twin"]["video"] = media.get(card["twin"]["key"])
        if card["onset"] is None and card["video"] and card["video"].get("failure_step") is not None:
            card["onset"] = card["video"]["failure_step"]  # runs from before the onset was stored: the replay's
        if card["full"]:
            _complete_card(store, out, card)
        else:
            card["flipbook"] = None
            frames = store.frames(card["key"])
            if frames is not None and len(frames.get("steps", [])):
                _flipbook(out, card, frames)
    for f in findings:
        f["video"] = next((media[k] | {"key": k} for k in f["shrunk"]["episode_keys"] if k in media), None)
        f["cards"] = [k for k in f["shrunk"]["episode_keys"] if any(c["key"] == k for c in cards)]

    boundaries = load_map(store.path)  # a map run (`stress map`): its picture and thresholds, the episodes at each boundary
    if boundaries:
        picture = io.BytesIO()
        save_map_plot(boundaries, picture)
        _write_bytes(out / "assets" / "map.png", picture.getvalue())
        outcome_of = {e["episode_key"]: "error" if e["error"] is not None else "success" if e["success"] else "failure" for e in episodes}
        boundaries = gallery_rows(boundaries, outcome_of, {c["key"] for c in cards})
    groups = _groups(cards)
    context = {
        "run": _run_info(store, manifest, episodes), "summary": [r.__dict__ for r in summary], "tables": tables,
        "language": language_sensitivity(valid, joined, frames=store.frames),
        "hints": {name: CHUNK_HINT.get(name) for name in tables if not tables[name]},
        "has_picture": bool(valid), "map": boundaries, "cards": cards, "groups": groups, "findings": findings,
        "failures": len(cards), "errors": len(episodes) - len(valid), "episodes": len(episodes), "max_cards": max_cards,
        "filters": {name: sorted({str(c[field]) for c in cards}, key=_natural) for name, field in
                    (("family", "family"), ("severity", "severity"), ("signature", "signature"), ("mode", "mode"), ("policy", "policy"),
                     ("property", "property")) if any(c[field] is not None for c in cards)},
        "step_rate": _step_rate(episodes), "videos": videos, "videos_command": all_command,
        "alarm": {"alpha": alarm["alpha"], "calibration": Path(alarm["calibration_run"]).name} if alarm else None,
    }
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(pct=_pct, num=_num, signed=_signed)
    html = env.get_template("gallery.html.j2").render(**context)
    for asset in ASSETS:
        _write_bytes(out / "assets" / asset, (TEMPLATES / asset).read_bytes())
    _write_text(out / "eval_info.json", _json_text(eval_info(episodes, order, {k: v["src"] for k, v in media.items() if v.get("src")})))
    _write_text(out / "index.html", html)
    return GalleryResult(out / "index.html", len(cards), sum(c["full"] for c in cards),
                         sum(1 for r in rendered.values() if "error" not in r), len([k for k in shown if k in cached]), missing)


def _control_hz(episodes: list[dict]) -> int:
    """The run's control rate (steps per second of simulated time; 20 when the suite is unknown or the run mixes rates)."""
    try:
        rates = {simulator_of(suite).env_class.control_hz for suite in {e["suite"] for e in episodes}}
    except Exception:  # a courtesy like the instructions: a run of an unknown suite still gets its gallery
        return 20
    return rates.pop() if len(rates) == 1 else 20


def _step_rate(episodes: list[dict]) -> int:
    """Steps per second of video (the timeline seeks by it): videos play in real time, at the control rate."""
    return _control_hz(episodes)


def _index(episodes: list[dict]) -> dict[str, dict]:
    return {e["episode_key"]: e for e in episodes}


def _natural(text: str):
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def _complete_card(store: RunStore, out: Path, card: dict) -> None:
    rows = card.pop("rows")
    all_rows = card.pop("all_rows")
    actions_path = store.path / "actions" / f"{card['key']}.npz"
    card["decision_steps"] = []
    if actions_path.is_file():
        card["decision_steps"] = [int(s) for s in store.actions(card["key"])[1]]
    elif rows:
        card["decision_steps"] = [r["step"] for r in rows]
    points = [{"step": r["step"], "pred": _finite(r["pred_value"]), "realised": _finite(r.get("realised_value"))} for r in rows]
    card["value_points"] = points
    card["value_plot"] = _value_svg(points, card["steps"], card["onset"])
    card["candidates"] = _candidates(all_rows)
    card["frames"], card["flipbook"], card["frames_note"] = [], None, None
    _future_frames(store, out, card, rows)
    span = max(card["steps"], 1)
    card["timeline"] = {"decisions": [{"step": s, "left": f"{100 * s / span:.2f}"} for s in card["decision_steps"]],
                        "onset_left": f"{100 * card['onset'] / span:.2f}" if card["onset"] is not None else None,
                        "frames": [{"step": f["step"], "left": f"{100 * f['step'] / span:.2f}"} for f in card["frames"]],
                        "alarms": [{**a, "left": f"{100 * a['fired'] / span:.2f}"} for a in card["alarms"] if a["fired"] is not None]}


def _groups(cards: list[dict]) -> list[dict]:
    groups = defaultdict(list)
    for card in cards:
        groups[(card["signature"], card["family"], card["property"] or "")].append(card)
    total = max(len(cards), 1)
    out = []
    for (signature, family, prop), members in groups.items():
        severities = sorted({c["severity"] for c in members})
        out.append({"signature": signature, "family": family, "property": prop or None, "count": len(members), "share": len(members) / total,
                    "severity_low": severities[0], "severity_high": severities[-1], "cards": members,
                    "anchor": "mode-" + _slug(f"{signature}|{family}|{prop}")})
    out.sort(key=lambda g: (-g["count"], g["cards"][0]["rank"]))
    return out


def _run_info(store: RunStore, manifest: dict, episodes: list[dict]) -> dict:
    command = manifest.get("command")
    if isinstance(command, list):
        argv = [str(a) for a in command]
        if argv and argv[0].endswith(("cli.py", "/stress", "__main__.py")):
            argv[0] = "stress"
        command = shlex.join(argv)
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    versions = manifest.get("versions") if isinstance(manifest.get("versions"), dict) else {}
    suites = sorted({e["suite"] for e in episodes})
    tasks = sorted({(e["suite"], e["task_id"]) for e in episodes})
    instructions = {}
    try:
        for suite, task in tasks:
            instructions[(suite, task)] = simulator_of(suite).tasks(suite)[task]
    except Exception:  # the instruction is a courtesy: a run of an unknown suite still gets its gallery
        pass
    return {
        "name": store.path.name, "path": str(store.path), "command": str(command or ""), "created": str(manifest.get("created", "")),
        "version": str(versions.get("stress", "?")), "git": str(manifest.get("git_revision") or "")[:12], "suites": suites,
        "tasks": [{"suite": s, "task_id": t, "instruction": instructions.get((s, t), "")} for s, t in tasks],
        "policies": sorted({e["policy"] for e in episodes}), "settings": sorted({e["setting"] for e in episodes}),
        "config": [(k, _compact(v)) for k, v in sorted(config.items()) if v not in (None, [], False)],
        "machine": _compact(manifest.get("machine", "")),
    }


# --- template filters --------------------------------------------------------------------------------
def _pct(value, digits: int = 0) -> str:
    value = _finite(value)
    return "—" if value is None else f"{100 * value:.{digits}f} %"


def _num(value, digits: int = 2) -> str:
    value = _finite(value)
    return "—" if value is None else f"{value:.{digits}f}"


def _signed(value, digits: int = 3) -> str:
    value = _finite(value)
    return "—" if value is None else f"{value:+.{digits}f}"
