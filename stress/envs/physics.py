"""MuJoCo facts every simulator adapter shares: the fault a broken simulation raises, its check, and the
pinhole projection of a world point into a camera image."""

from __future__ import annotations

import mujoco
import numpy as np

# MuJoCo warnings that mean the physics is no longer trustworthy
FATAL_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQACC, mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL)


class SimulatorFault(RuntimeError):
    """The simulation became invalid (NaN state, MuJoCo instability): the episode gets an error."""


def check_physics(data: mujoco.MjData) -> None:
    """Raise ``SimulatorFault`` when the state is NaN/inf or MuJoCo flagged an instability."""
    if not (np.all(np.isfinite(data.qpos)) and np.all(np.isfinite(data.qvel))):
        raise SimulatorFault("simulator state is NaN/inf")
    for warning in FATAL_WARNINGS:
        if data.warning[warning].number > 0:
            raise SimulatorFault(f"MuJoCo instability warning {warning.name}")


def project(model: mujoco.MjModel, data: mujoco.MjData, camera: str, point: np.ndarray, image_size: int) -> tuple[float, float] | None:
    """(row, col) of a world point in the upright square image of MuJoCo camera ``camera``; None when
    behind the camera."""
    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    rel = data.cam_xmat[cam_id].reshape(3, 3).T @ (np.asarray(point) - data.cam_xpos[cam_id])
    if rel[2] >= 0:  # MuJoCo cameras look along -z
        return None
    focal = 0.5 * image_size / np.tan(np.deg2rad(model.cam_fovy[cam_id]) / 2)
    col = image_size / 2 + focal * rel[0] / -rel[2]
    row = image_size / 2 - focal * rel[1] / -rel[2]
    return float(row), float(col)
