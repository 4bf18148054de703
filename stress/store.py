"""The results store: ``results/<run-id>/`` with a manifest, Parquet tables and recorded actions.

Layout of a run folder::

    manifest.json            format version, command, config, the run's ScenarioSpecs, versions, git revision
    parts/<key>.parquet      one finished episode (written atomically; its presence = episode done)
    actions/<key>.npz        the executed actions (steps x the simulator's action width) and the policy-query steps, for exact replay
    decisions/<key>.parquet  per-decision predictions, for backends that make them
    frames/<key>.npz         agentview frames at each measured decision: observed, predicted and true future
    episodes.parquet         all parts gathered (rewritten at the end of a run and by ``stress show``)
    decisions.parquet        all decision parts gathered
    media/                   replay videos

Every file is written to a temporary name and renamed, so a crash (even SIGKILL) never leaves a
half-written table, and a resumed run skips exactly the episodes whose part exists.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stress.core.files import atomic_write
from stress.core.episode import DECISION_SCHEMA, EPISODE_SCHEMA
from stress.core.spec import ScenarioSpec
from stress.core.errors import UserError

FORMAT = "stress-run/1"
RETRY_ERRORS = ("policy_unavailable:",)  # error prefixes of episodes a resumed run runs again (stress.core.policy.PolicyUnavailable)
TRACKED_PACKAGES = ("stress", "mujoco", "robosuite", "hf-libero", "numpy", "torch", "albumentations", "pyarrow", "duckdb")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _git_revision() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A stored part in the current schema: columns added since it was written are null."""
    columns = [table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class RunStore:
    """One run folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # --- creating and opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, out: Path, run_id: str, specs: list[ScenarioSpec], config: dict[str, Any]) -> "RunStore":
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UserError(f"output folder {str(out)!r} is a file; give a folder (default: results)")
        store = cls(out / run_id)
        if store.path.exists():
            raise UserError(f"run folder {str(store.path)!r} already exists; resume it with --resume {store.path}")
        manifest = {
            "format": FORMAT,
            "run_id": run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv,
            "config": config,
            "specs": [s.to_dict() for s in specs],
            "versions": _versions(),
            "git_revision": _git_revision(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        }
        store.write_json("manifest.json", manifest)
        return store

    @classmethod
    def open(cls, path: Path) -> "RunStore":
        store = cls(Path(path))
        manifest_path = store.path / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"{str(path)!r} is not a run folder (no manifest.json); give a folder under results/")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"manifest of {str(path)!r} is not valid JSON ({exc.msg})") from None
        if manifest.get("format") != FORMAT:
            raise UserError(f"run folder {str(path)!r} has format {manifest.get('format')!r}; this version reads {FORMAT!r}")
        return store

    def write_json(self, name: str, data: Any) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, default=str)
        atomic_write(self.path / name, lambda tmp: Path(tmp).write_text(text))

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text())

    def specs(self) -> list[ScenarioSpec]:
        return [ScenarioSpec.from_dict(d) for d in self.manifest["specs"]]

    def add_specs(self, specs: list[ScenarioSpec]) -> None:
        """Append specs to the manifest (a search proposes its scenarios as it goes); known keys are skipped."""
        manifest = self.manifest
        known = {ScenarioSpec.from_dict(d).key for d in manifest["specs"]}
        new = [s.to_dict() for s in {s.key: s for s in specs if s.key not in known}.values()]
        if new:
            manifest["specs"] += new
            self.write_json("manifest.json", manifest)

    def spec(self, key: str) -> ScenarioSpec:
        for spec in self.specs():
            if spec.key == key:
                return spec
        raise UserError(f"episode {key!r} not in run {self.path.name}; `stress show {self.path}` lists the keys")

    # --- episodes -------------------------------------------------------------------------------------
    def done_keys(self) -> set[str]:
        """Keys of stored episodes, less those that ended in a transient error (``RETRY_ERRORS``: a policy
        server gone mid-run): a resumed run runs them again (they carry a marker in ``retry/``)."""
        parts = self.path / "parts"
        if not parts.is_dir():
            return set()
        retry = self.path / "retry"
        again = {p.name for p in retry.iterdir()} if retry.is_dir() else set()
        return {p.stem for p in parts.glob("*.parquet")} - again

    def write_episode(self, row: dict[str, Any], actions: np.ndarray, decisions: list[dict[str, Any]], decision_steps: list[int],
                      frames: dict[int, dict[str, np.ndarray]] | None = None) -> None:
        """Store one finished episode. The part file is written last: its presence means 'done'.
        ``frames``: decision step -> {"observed", "predicted", "true"} agentview uint8 images (ground truth)."""
        key = row["episode_key"]
        if frames:
            steps = sorted(frames)

            def save_frames(tmp):
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, steps=np.asarray(steps, dtype=np.int64),
                                        **{kind: np.stack([frames[s][kind] for s in steps]) for kind in ("observed", "predicted", "true")})

            atomic_write(self.path / "frames" / f"{key}.npz", save_frames)

        def save_actions(tmp):
            with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a plain name
                steps_x_dim = np.asarray(actions, dtype=np.float64)  # each simulator's own width (LIBERO 7, ALOHA 14)
                np.savez(f, actions=steps_x_dim if steps_x_dim.ndim == 2 else steps_x_dim.reshape(len(steps_x_dim), -1), decision_steps=np.asarray(decision_steps, dtype=np.int64))

        atomic_write(self.path / "actions" / f"{key}.npz", save_actions)
        if decisions:
            table = pa.Table.from_pylist(decisions, schema=DECISION_SCHEMA)
            atomic_write(self.path / "decisions" / f"{key}.parquet", lambda tmp: pq.write_table(table, tmp))
        table = pa.Table.from_pylist([row], schema=EPISODE_SCHEMA)
        marker = self.path / "retry" / key
        if str(row.get("error") or "").startswith(RETRY_ERRORS):
            marker.parent.mkdir(exist_ok=True)
            marker.touch()  # before the part: a crash in between leaves the episode to run again, never lost
        atomic_write(self.path / "parts" / f"{key}.parquet", lambda tmp: pq.write_table(table, tmp))
        if marker.exists() and not str(row.get("error") or "").startswith(RETRY_ERRORS):
            marker.unlink()

    def actions(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """The executed actions (steps x action width) and the steps at which the policy was queried."""
        path = self.path / "actions" / f"{key}.npz"
        if not path.is_file():
            raise UserError(f"no recorded actions for episode {key!r} in {self.path.name}")
        with np.load(path) as data:
            return data["actions"], data["decision_steps"]

    def frames(self, key: str) -> dict[str, np.ndarray] | None:
        """The agentview frames stored at the episode's measured decisions (``steps``, ``observed``,
        ``predicted``, ``true``: N x H x W x 3 uint8), or None when the run stored none for it."""
        path = self.path / "frames" / f"{key}.npz"
        if not path.is_file():
            return None
        with np.load(path) as data:
            return {name: data[name] for name in data.files}

    def consolidate(self) -> None:
        """Gather the parts into episodes.parquet / decisions.parquet (atomic rewrite)."""
        for table_name, folder, schema in (("episodes", "parts", EPISODE_SCHEMA), ("decisions", "decisions", DECISION_SCHEMA)):
            files = sorted((self.path / folder).glob("*.parquet")) if (self.path / folder).is_dir() else []
            if not files:
                continue
            table = pa.concat_tables([_conform(pq.read_table(f), schema) for f in files])
            atomic_write(self.path / f"{table_name}.parquet", lambda tmp, t=table: pq.write_table(t, tmp))

    def query(self, sql: str, params: list | None = None):
        """Run DuckDB SQL with the views ``episodes`` and (when any were stored) ``decisions`` over the stored parts. Returns a list of dict rows."""
        con = duckdb.connect()
        parts = self.path / "parts"
        if not parts.is_dir() or not any(parts.glob("*.parquet")):
            return []
        con.execute(f"CREATE VIEW episodes AS SELECT * FROM read_parquet('{parts}/*.parquet', union_by_name = true)")
        decisions = self.path / "decisions"
        if decisions.is_dir() and any(decisions.glob("*.parquet")):
            con.execute(f"CREATE VIEW decisions AS SELECT * FROM read_parquet('{decisions}/*.parquet', union_by_name = true)")
        cursor = con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
