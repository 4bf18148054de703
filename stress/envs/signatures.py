"""Failure signature of an episode on a robosuite-based scene (LIBERO, robosuite's tasks), from simulator
state (never from images): how it failed. It lives with the simulators because it is read from their contacts
after every step (``env.failure_tracker()``); ALOHA's tracker (``stress.envs.aloha``) speaks the same vocabulary.

Traced at every step (contacts and positions: no render): whether both fingers hold the task's object,
the object's distance to the goal target, the gripper command, and whether an arm link (not the
fingers) touched anything but the robot. At the end, the first rule that holds names the failure:

* ``collision``: an arm link hit the scene (table, fixture, object) at some step;
* ``never_grasped``: the object was never held;
* ``dropped``: the grasp was lost while the gripper was commanded closed, away from the goal;
* ``wrong_place``: the gripper opened on purpose away from the goal (released in the wrong place);
* ``timeout_near_goal``: the budget ran out with the object within ``NEAR_M`` of the target;
* ``timeout``: none of the above (held, but never brought near the goal in time).

Successful episodes get ``success``. The gallery clusters failures by signature.

``progress`` grades an episode from the same trace (0 = nothing done, 1 = solved): 0.4 for having held the
object, plus 0.6 times the share of its starting distance to the goal it was brought closer at the end;
the search uses it to tell a near miss from a failure that never started.
``onset(success)`` is the step at which the named failure began (the first arm collision, the step the
last grasp ended); None for failures without one moment (never grasped, the budget ran out).
"""

from __future__ import annotations

import numpy as np

SIGNATURES = ("success", "collision", "never_grasped", "dropped", "wrong_place", "timeout_near_goal", "timeout")
NEAR_M = 0.05  # horizontal distance (m) to the target counted as "near the goal"


class SignatureTracker:
    def __init__(self, env):
        self.env, self.scene = env, env.scene  # a PandaScene: grasp = both fingers touch
        self.object = env.target_object
        self.target = env.goal[0][2] if env.goal and len(env.goal[0]) > 2 else None
        model, name = self.scene.model, self.scene.geom_name
        robot = {g for g in range(model.ngeom) if name(g).startswith(("robot0_", "mount0_"))}
        self.fingers = set().union(*self.scene.fingers)
        gripper = {g for g in range(model.ngeom) if name(g).startswith("gripper0_")}
        self.arm, self.robot = robot - gripper, robot | gripper
        self.ever_grasped = self.collided = False
        self.released: str | None = None  # how the last grasp ended: "dropped" or "opened"
        self.holding = False
        self.start_distance = self._distance()
        self.collision_step: int | None = None  # env step of the first arm collision
        self.release_step: int | None = None  # env step at which the last grasp ended away from the goal

    def _distance(self) -> float | None:
        if self.target is None:
            return None
        try:
            delta = self.scene.object_position(self.object) - self.scene.object_position(self.target)
        except KeyError:
            return None
        return float(np.linalg.norm(delta[:2]))

    def step(self, action: np.ndarray) -> None:
        holding = self.scene.grasped(self.object)
        if self.holding and not holding:
            near = (self._distance() or np.inf) < NEAR_M
            self.released = None if near else ("dropped" if action[6] > 0 else "opened")
            self.release_step = None if near else self.env.step_count
        if holding:
            self.ever_grasped, self.released = True, None
        self.holding = holding
        data = self.scene.data
        for c in data.contact[: data.ncon]:
            if (c.geom1 in self.arm and c.geom2 not in self.robot) or (c.geom2 in self.arm and c.geom1 not in self.robot):
                if not self.collided:
                    self.collision_step = self.env.step_count
                self.collided = True
                break

    def signature(self, success: bool) -> str:
        if success:
            return "success"
        if self.collided:
            return "collision"
        if not self.ever_grasped:
            return "never_grasped"
        if self.released == "dropped":
            return "dropped"
        if self.released == "opened":
            return "wrong_place"
        distance = self._distance()
        return "timeout_near_goal" if distance is not None and distance < NEAR_M else "timeout"

    def progress(self, success: bool) -> float:
        """0-1: how far the episode got (1 when solved); see the module docstring."""
        if success:
            return 1.0
        closer = 0.0
        distance = self._distance()
        if distance is not None and self.start_distance:
            closer = float(np.clip(1.0 - distance / self.start_distance, 0.0, 1.0))
        return round(min(0.99, 0.4 * self.ever_grasped + 0.6 * closer), 4)

    def onset(self, success: bool) -> int | None:
        """The env step at which the failure named by ``signature(success)`` began, where it has one."""
        signature = self.signature(success)
        if signature == "collision":
            return self.collision_step
        if signature in ("dropped", "wrong_place"):
            return self.release_step
        return None
