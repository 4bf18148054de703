"""Each family's declared parameter space (perturbations/space.py): validation, grid axes, docs, CLI."""

import json
from pathlib import Path

from perturbations.base import PerturbationSpec, parameters_for, registry

GOLDEN = Path(__file__).parent / "data" / "sampled_params.json"


def sampled_params() -> dict[str, dict]:
    """What the code samples for every family x severity 0-5 x seed 0-3 x camera target."""
    out = {}
    for name, cls in registry().items():
        cameras = ("both", "agentview", "wrist") if cls.per_camera else ("both",)
        for severity in range(6):
            for seed in range(4):
                for camera in cameras:
                    out[f"{name}/{severity}/{seed}/{camera}"] = parameters_for(PerturbationSpec(name, severity, seed, camera))
    return out


def test_sampled_parameters_never_change():
    # existing runs resume and replay by these: a family may not sample differently for the same spec
    golden = json.loads(GOLDEN.read_text())
    current = json.loads(json.dumps(sampled_params()))
    assert golden.keys() <= current.keys()  # a new family adds keys; none may go
    changed = [key for key in golden if current[key] != golden[key]]
    assert not changed, changed[:10]
