"""gym-aloha's facts that the ALOHA adapter (stress.envs.aloha) and the ALOHA expert
(stress.policies.aloha_expert) both build on; they live here so the two never import each other."""

from __future__ import annotations

CHUNK = 50  # Cosmos Policy's ALOHA action chunk, executed whole
MAX_STEPS = 400  # insertion first succeeds around step 355; gym-aloha registers 300
SUBSTEPS = 10  # one 50 Hz control step = 10 physics steps of 2 ms (gym-aloha's DT / timestep)


def asset_path(name: str):
    """A file of gym-aloha's scene assets (its MJCF scenes and meshes)."""
    from gym_aloha.constants import ASSETS_DIR  # optional heavy dependency: gym-aloha is loaded only on use

    return ASSETS_DIR / name
