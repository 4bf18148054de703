"""``stress replay RUN EPISODE_KEY``: re-execute the recorded actions in the same perturbed scene and
write an mp4 (agentview | wrist, as the policy saw them, 20 fps) without calling the policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from stress.runner import EnvCache
from stress.store import RunStore

FPS = 20  # LIBERO's control rate
UPSCALE = 2  # 128 px frames are small to look at


@dataclass
class ReplayResult:
    key: str
    success: bool
    steps: int
    recorded_success: bool
    recorded_steps: int
    video: Path | None

    @property
    def matches(self) -> bool:
        return self.success == self.recorded_success and self.steps == self.recorded_steps


def frame(env) -> np.ndarray:
    images = [env.perturb_pixels(env.render(camera), camera) for camera in ("agentview", "wrist")]
    side_by_side = np.concatenate(images, axis=1)
    return np.repeat(np.repeat(side_by_side, UPSCALE, axis=0), UPSCALE, axis=1)


def replay(store: RunStore, key: str, video: Path | None = None) -> ReplayResult:
    spec = store.spec(key)
    rows = store.query("SELECT success, steps, error FROM episodes WHERE episode_key = ?", [key])
    if not rows:
        raise ValueError(f"episode {key} has no stored result")
    recorded = rows[0]
    actions, decision_steps = store.actions(key)
    queries = set(decision_steps.tolist())
    if video is None:
        video = store.path / "media" / f"{key}.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    envs = EnvCache()
    try:
        env = envs.get(spec)
        env.reset(spec.init_index, spec.perturbations)
        success = False
        with imageio.get_writer(video, fps=FPS, codec="libx264", quality=8, macro_block_size=2) as writer:
            writer.append_data(frame(env))
            for step, action in enumerate(actions):
                if step in queries:
                    env.begin_chunk()  # event triggers count steps into the chunk, as in the run
                success = env.step(action)
                writer.append_data(frame(env))
        steps = env.step_count
    finally:
        envs.close()
    result = ReplayResult(key, bool(success), steps, bool(recorded["success"]), int(recorded["steps"]), video)
    store.write_json(f"media/{key}.replay.json", {**result.__dict__, "video": str(video), "matches": result.matches})
    return result
