"""Camera facts shared by the LIBERO adapter and the perturbation families (no simulator import here, so
families can import it while ``stress.envs.libero`` is still loading the ``perturbations`` package)."""

CAMERAS = ("agentview", "wrist")  # the camera names LIBERO and robosuite scenes hand to policies (ours)
CAMERA_NAMES = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}  # ours -> MuJoCo's
# Geom groups seen by one camera only (LIBERO uses groups 0 and 1): a visual-only body meant for one
# camera (e.g. an occluder in front of the wrist camera) goes in that camera's group.
CAMERA_GEOM_GROUP = {"agentview": 3, "wrist": 4}

# every simulator's cameras (LIBERO's, then ALOHA's): the per-camera world-model columns of decisions.parquet,
# listed here so naming them never imports a simulator (tests/test_remote_policy checks the registry has no other)
STORED_CAMERAS = (*CAMERAS, "top", "left_wrist", "right_wrist")
