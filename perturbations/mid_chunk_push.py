"""Event-layer mid-chunk push: an object is pushed or moved once, while the policy executes a chunk.

Probes the open-loop chunk failure mode: the policy planned its chunk for a scene that changes under it.
The event fires once per episode, on the first env step where its trigger holds:

* ``chunk_step``: after action ``step`` (0-based; LIBERO's chunks have 16 actions, ALOHA's 50, and a step
  beyond the env's ``chunk_size`` is a user error) of the ``chunk``-th executed chunk (0 = the first policy
  query); the runner calls ``env.begin_chunk()`` at every query, so the env step with
  ``env.chunk_step == step + 1`` is that action;
* ``gripper_distance``: when a grip site (``env.scene.grip_points()``: ALOHA has two) comes within ``distance_m``
  of the object's origin.

Then, on the object (the task's target by default):

* ``push``: its linear velocity in the table plane is set to ``speed_mps`` along ``direction_deg``
  (a velocity kick: the object then slides and friction stops it);
* ``move``: it is teleported by ``displacement_m`` along ``direction_deg`` (velocity zeroed).

Severity is the push strength / the displacement. Push speeds are calibrated so that a free push slides
a LIBERO bowl (libero_spatial) as far as the move of the same level (it stops within 5 steps); other
objects slide less or topple (cans in libero_object: 0.2, 0.7, 2, 7, 11 cm), which is why the achieved
displacement is recorded:

    level                 1          2          3          4          5
    move displacement     1 cm       2 cm       4 cm       6 cm       8 cm
    push speed            0.45 m/s   0.62 m/s   0.88 m/s   1.1 m/s    1.28 m/s

A sample draws the trigger (either kind: chunk 1-3 and a step of the simulator's chunk, or 5-15 cm), the
action (push or move) and the direction (0-360 deg in the table plane, 0 = +x, away from the LIBERO robot).

Record: ``check`` (at reset, before the event) starts the realisation with ``fired: false`` and
``status: "not_reached"``; ``on_step`` fills in the same record (the env hands it over)
when the event fires (step, chunk, chunk step, gripper distance, position before, what was applied) and
for the next 5 steps the displacement achieved (``displacement_m`` after ``measured_after_steps``). An
episode that ends before the trigger (solved early, or the gripper never got that close) keeps
``fired: false``: not an error, the policy simply never reached that situation (the record also keeps
the number of chunks started and, for the distance trigger, the closest approach). A fired event that
did not move the object by 1 mm within 5 steps raises ``NotRealised`` (the episode is an error).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from perturbations.base import Perturbation, register
from stress.core.errors import NotRealised
from stress.core.spec import Layer
from perturbations.object_pose import free_joint, object_name, object_name_check
from perturbations.space import Choice, Free, ParamSpace, Real
from stress.core.errors import UserError



MOVE_M = {1: 0.01, 2: 0.02, 3: 0.04, 4: 0.06, 5: 0.08}
PUSH_MPS = {1: 0.45, 2: 0.62, 3: 0.88, 4: 1.1, 5: 1.28}
TRIGGERS = ("chunk_step", "gripper_distance")
ACTIONS = ("push", "move")
CHUNK_LEN = 16  # LIBERO's chunk (Cosmos Policy): the search grid and LIBERO's samples keep to it
MAX_CHUNK_LEN = 50  # ALOHA's chunk
MEASURE_STEPS = 5
MIN_EFFECT_M = 0.001



@register
class MidChunkPush(Perturbation):
    name = "mid_chunk_push"
    layer = Layer.EVENT
    needs = frozenset({"movable_objects", "grip_points"})
    summary = "an object pushed (velocity kick) or moved once, mid-chunk or when the gripper comes close"
    severity_meaning = (
        "move displacement / push speed: 1: 1 cm / 0.45 m/s, 2: 2 cm / 0.62 m/s, 3: 4 cm / 0.88 m/s, "
        "4: 6 cm / 1.1 m/s, 5: 8 cm / 1.28 m/s (a push slides a bowl about as far as the move)"
    )
    space = ParamSpace(
        Free("object", "'target' (the task's target object, default) or a movable object's name", check=object_name_check("object")),
        Choice("trigger", TRIGGERS, "chunk_step: after an action of a chunk; gripper_distance: when the gripper comes close to the object"),
        Real("chunk", 0, 1000, "", "chunk_step: index of the executed chunk, 0 = first policy query", default=1, step=1, integer=True,
             search_high=12),  # libero_spatial's 220 steps are 14 chunks of 16
        Real("step", 0, MAX_CHUNK_LEN - 1, "", "chunk_step: fires after this action of the chunk (0-based; LIBERO's chunks have 16 actions, ALOHA's 50)",
             default=0, step=1, integer=True, search_high=CHUNK_LEN - 1),
        Real("distance_m", 0.01, 0.5, "m", "gripper_distance: grip site to object origin", default=0.1, step=0.01),
        # a move is exact, a push depends on friction: the move is the milder, default action
        Choice("action", ("move", "push"), "move: teleport by displacement_m; push: velocity kick of speed_mps"),
        Real("speed_mps", 0.0, 2.0, "m/s", "push: speed set in the table plane", identity=0.0, step=0.02),
        Real("displacement_m", 0.0, 0.2, "m", "move: distance moved in the table plane", identity=0.0, step=0.002),
        Real("direction_deg", 0.0, 360.0, "deg", "direction in the table plane (0 = +x, away from the robot; 90 = +y)", default=0.0, step=5.0),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...], chunk_len: int = CHUNK_LEN) -> dict[str, Any]:
        params: dict[str, Any] = {"object": "target", "trigger": str(rng.choice(TRIGGERS))}
        if params["trigger"] == "chunk_step":
            params["chunk"], params["step"] = int(rng.integers(1, 4)), int(rng.integers(0, chunk_len))
        else:
            params["distance_m"] = round(float(rng.uniform(0.05, 0.15)), 4)
        params["action"] = str(rng.choice(ACTIONS))
        if params["action"] == "push":
            params["speed_mps"] = PUSH_MPS[severity]
        else:
            params["displacement_m"] = MOVE_M[severity]
        params["direction_deg"] = round(float(rng.uniform(0.0, 360.0)), 2)
        return params

    def sample_on(self, simulator, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        """The trigger step anywhere in the simulator's chunk (ALOHA: 0-49)."""
        return self.sample(severity, rng, cameras, simulator.chunk_size)

    def check_params_on(self, simulator, params: dict[str, Any]) -> None:
        self._check_step(params, simulator.name, simulator.chunk_size)

    @staticmethod
    def _check_step(params: dict[str, Any], simulator: str, chunk: int) -> None:
        if params.get("trigger", "chunk_step") == "chunk_step" and params.get("step", 0) >= chunk:
            raise UserError(f"mid_chunk_push step {params['step']} never fires on {simulator} (chunks of {chunk} actions); "
                            f"valid: 0-{chunk - 1}")

    def is_identity(self, params: dict[str, Any]) -> bool:
        strength = params.get("speed_mps" if params.get("action") == "push" else "displacement_m", 0.0)
        return not params or not strength

    def resolve(self, params: dict[str, Any], env, cameras: tuple[str, ...]) -> dict[str, Any]:
        if self.is_identity(params):
            return params
        self._check_step(params, env.simulator, env.chunk_size)
        return {**params, "object": object_name(env, params.get("object", "target"))}

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        """At reset the event has not happened: start its record, which ``on_step`` completes."""
        if self.is_identity(params):
            return {}
        return {"fired": False, "status": "not_reached", "chunks_started": 0}

    def on_step(self, env, params: dict[str, Any], step: int, record: dict[str, Any]) -> None:
        if self.is_identity(params):
            return
        params = {**self.space.defaults(), **params}  # explicit params may leave out what has a default
        if env.chunk_step == 1:  # first action of a chunk: the runner queried the policy just before
            record["chunks_started"] += 1
        name = params["object"]
        position = env.object_position(name)
        if record["fired"]:
            after = step - record["fired_at_step"]
            if after <= MEASURE_STEPS:
                moved = position - np.asarray(record["position_before"])
                record["displacement_m"] = [round(float(v), 5) for v in moved]
                record["distance_m"] = round(float(np.linalg.norm(moved[:2])), 5)
                record["measured_after_steps"] = after
                if after == MEASURE_STEPS and record["distance_m"] < MIN_EFFECT_M:
                    moved_mm = record["distance_m"] * 1000
                    raise NotRealised(f"mid_chunk_push {params['action']} left {name} in place ({moved_mm:.1f} mm in {MEASURE_STEPS} steps)")
            return
        gap = min(float(np.linalg.norm(point - position)) for point in env.scene.grip_points())  # the nearest gripper
        if params["trigger"] == "chunk_step":
            due = record["chunks_started"] - 1 == params["chunk"] and env.chunk_step == params["step"] + 1
        else:
            record["closest_gripper_distance_m"] = round(min(gap, record.get("closest_gripper_distance_m", np.inf)), 5)
            due = gap <= params["distance_m"]
        if due:
            self._fire(env, params, record, step, position, gap)

    @staticmethod
    def _fire(env, params, record, step, position, gap) -> None:
        data = env.data
        qadr, vadr = free_joint(env, params["object"])
        angle = np.radians(params["direction_deg"])
        u = np.array([np.cos(angle), np.sin(angle)])
        if params["action"] == "push":
            data.qvel[vadr : vadr + 2] = params["speed_mps"] * u
            applied = {"velocity_set_mps": [round(float(v), 5) for v in data.qvel[vadr : vadr + 3]]}
        else:
            data.qpos[qadr : qadr + 2] += params["displacement_m"] * u
            data.qvel[vadr : vadr + 6] = 0.0
            applied = {"moved_by_m": [round(float(v), 5) for v in params["displacement_m"] * u]}
        mujoco.mj_forward(env.model, data)
        record.update(
            fired=True,
            status="fired",
            fired_at_step=step,
            chunk=record["chunks_started"] - 1,
            chunk_step=env.chunk_step - 1,
            gripper_distance_m=round(gap, 5),
            position_before=[round(float(v), 6) for v in position],
            **applied,
        )
