"""``stress replay RUN EPISODE_KEY``: re-execute the recorded actions in the same perturbed scene and
write an mp4 (the simulator's cameras side by side at the policy's image size, as the policy saw them, in real time at
about 10 fps: every step is executed, every other one's frame written at a 20 Hz control rate; H.264 yuv420p) without calling
the policy. The failure gallery renders its videos with the same function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from stress.envs.cache import EnvCache
from stress.store import RunStore

VIDEO_FPS = 10  # frames per second of a replay video; the page scales the frames up


def frame_stride(control_hz: int) -> int:
    """Control steps per video frame: 2 at LIBERO's 20 Hz (a frame costs two renders and its encoding; a step is cheap)."""
    return max(1, round(control_hz / VIDEO_FPS))


@dataclass
class ReplayResult:
    key: str
    success: bool
    steps: int
    recorded_success: bool
    recorded_steps: int
    video: Path | None
    failure_step: int | None = None  # where the replayed failure began (stress.envs.signatures onset)

    @property
    def matches(self) -> bool:
        return self.success == self.recorded_success and self.steps == self.recorded_steps


def frame(env) -> np.ndarray:
    images = [env.perturb_pixels(env.render(camera), camera) for camera in env.cameras]
    return np.concatenate(images, axis=1)


def video_writer(path: Path, fps: float = VIDEO_FPS):
    """H.264 in yuv420p (what browsers play), the index up front so a page can start it at once."""
    return imageio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=2, pixelformat="yuv420p",
                              ffmpeg_params=["-movflags", "+faststart"], ffmpeg_log_level="error")


def render_episode(store: RunStore, key: str, video: Path, envs: EnvCache, poster: Path | None = None) -> ReplayResult:
    """Replay one stored episode into ``video``, executing every recorded step (frame 0: the reset scene; frame i: after
    step ``i * stride``, so the video plays in real time; the final state is always the last frame); ``poster``: also save
    its last frame as a PNG (what a page shows before the video plays)."""
    spec = store.spec(key)
    rows = store.query("SELECT success, steps, error FROM episodes WHERE episode_key = ?", [key])
    if not rows:
        raise ValueError(f"episode {key} has no stored result")
    recorded = rows[0]
    actions, decision_steps = store.actions(key)
    queries = set(decision_steps.tolist())
    video.parent.mkdir(parents=True, exist_ok=True)
    env = envs.get(spec)
    env.reset(spec.init_index, spec.perturbations)
    tracker = env.failure_tracker()
    success = False
    stride = frame_stride(env.control_hz)
    with video_writer(video, env.control_hz / stride) as writer:
        last = frame(env)
        writer.append_data(last)
        for step, action in enumerate(actions):
            if step in queries:
                env.begin_chunk()  # event triggers count steps into the chunk, as in the run
            success = env.step(action)
            tracker.step(action)
            if (step + 1) % stride == 0 or step == len(actions) - 1:
                last = frame(env)
                writer.append_data(last)
    if poster is not None:
        imageio.imwrite(poster, last, format="png")
    return ReplayResult(key, bool(success), env.step_count, bool(recorded["success"]), int(recorded["steps"]), video, tracker.onset(bool(success)))


def replay(store: RunStore, key: str, video: Path | None = None) -> ReplayResult:
    if video is None:
        video = store.path / "media" / f"{key}.mp4"
    envs = EnvCache()
    try:
        result = render_episode(store, key, video, envs)
    finally:
        envs.close()
    store.write_json(f"media/{key}.replay.json", {**result.__dict__, "video": str(video), "matches": result.matches})
    return result
