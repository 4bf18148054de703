"""robosuite 1.4's own tasks (Lift, PickPlaceCan, Stack) behind the simulator protocol: suite ``robosuite``.

The same robot, controller and cameras as LIBERO (which is built on robosuite 1.4): a Panda driven by
OSC_POSE 7-D delta actions at 20 Hz, cameras ``agentview`` and ``wrist`` (robosuite's
``robot0_eye_in_hand``), so LIBERO's camera-based families and 7-D policies apply unchanged; what this
adapter shares with ``LiberoEnv`` lives in ``stress.envs.robosuite_base``.

* Init state ``i`` is robosuite's own placement reset seeded with ``i``: its placement samplers and the
  robot's initialization noise draw from the *global* numpy RNG, which is seeded for the reset and then
  given back to the caller (as LiberoEnv does for LIBERO's fixtures), so init ``i`` is one scene whatever
  ran before.
* 10 no-op settle steps (gripper open) before the first decision, as LIBERO's evaluations: the objects are
  dropped a few mm onto the table by the sampler and come to rest.
* Success is the env's own ``_check_success()``; the failure tracker is ``stress.envs.signatures`` (grasp, drop,
  wrong place, arm collisions, from contacts), with each task's goal stated as LIBERO's are.
* Step limit 400 for the three tasks: the privileged expert's slowest successful episode over 50 seeds
  (Stack, 250 steps, after a re-grasp; PickPlaceCan 231, Lift 39: docs/robosuite.md) with ~60 % headroom for
  policies slower than the expert; one limit per suite, as the registry keeps them. robosuite's own horizon (1000,
  for RL) would make failed episodes needlessly long.
"""

from __future__ import annotations

import warnings

import mujoco
import numpy as np

from stress.core.spec import Layer, PerturbationSpec
from stress.envs.base import Simulator, family_layer, named_task_index
from stress.envs.robosuite_base import NOOP_ACTION, PandaScene, RobosuiteSimEnv, prepare_robosuite_import, seeded_global_numpy
from stress.core.errors import UserError, choice_error

SUITE = "robosuite"
SUITES = (SUITE,)
TASKS = ("Lift", "PickPlaceCan", "Stack")  # task id = index; robosuite's env names
# robosuite ships no instructions; "left" and "far" as the robot sees it
INSTRUCTIONS = {
    "Lift": "lift the red cube",
    "PickPlaceCan": "pick up the can and put it in the far left compartment of the left bin",
    "Stack": "stack the red cube on the green cube",
}
# what success means, as (predicate, object, target) like LIBERO's goals: the expert and the signatures read it
GOALS = {"Lift": [["lift", "cube"]], "PickPlaceCan": [["in", "can", "can_bin"]], "Stack": [["on", "cubeA", "cubeB"]]}
MAX_STEPS = 400  # see the module docstring
SUITE_MAX_STEPS = {SUITE: MAX_STEPS}
N_INIT_STATES = 50  # init state i = robosuite's placement reset seeded with i
SETTLE_STEPS = 10
VALUE_DISCOUNT = 0.99  # as LIBERO's: same robot, controller and control rate


def check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise choice_error("suite", suite, SUITES)


def suite_tasks(suite: str = SUITE) -> tuple[str, ...]:
    check_suite(suite)
    return tuple(INSTRUCTIONS.values())  # written in task-id order


def task_index(task: int | str) -> int:
    """Task id of a task given by id (0, "0") or robosuite name ("Lift", "PickPlaceCan", "Stack")."""
    return named_task_index(SUITE, task, TASKS)


def _make(name: str, image_size: int):
    prepare_robosuite_import()
    import robosuite
    from robosuite.controllers import load_controller_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return robosuite.make(
            name,
            robots="Panda",
            controller_configs=load_controller_config(default_controller="OSC_POSE"),  # LIBERO's controller
            control_freq=20,
            has_renderer=False,
            has_offscreen_renderer=True,
            use_camera_obs=False,  # we render on demand instead of every step
            camera_heights=image_size,
            camera_widths=image_size,
            reward_shaping=False,
            hard_reset=False,  # a hard reset rebuilds the MuJoCo model (new model/data, new GL context)
            ignore_done=True,  # the episode length is ours
        )


class RobosuiteScene(PandaScene):
    """A robosuite task's answers: its objects by name, and PickPlaceCan's target region (``can_bin``) as a point."""

    def object_position(self, name: str) -> np.ndarray:
        regions = self.env._regions
        if name in regions:
            lo, hi = regions[name]
            return np.array([*(lo[:2] + hi[:2]) / 2, lo[2]])  # the compartment's floor centre
        return np.array(self.data.xpos[self.env.object_bodies[name]])


class RobosuiteEnv(RobosuiteSimEnv):
    """One of robosuite 1.4's Lift (0), PickPlaceCan (1), Stack (2); reusable across init states and
    non-scene perturbations. No scene-layer family supports robosuite yet (they edit LIBERO's BDDL/XML)."""

    simulator = "robosuite"
    settle_steps = SETTLE_STEPS
    scene_class = RobosuiteScene

    def __init__(self, suite: str = SUITE, task_id: int | str = 0, image_size: int = 128, scene: tuple[PerturbationSpec, ...] = ()):
        check_suite(suite)
        self.suite, self.task_id, self.image_size = suite, task_index(task_id), int(image_size)
        self.task = TASKS[self.task_id]
        scene_specs = tuple(s for s in scene if family_layer(s) is Layer.SCENE)
        if scene_specs:  # the runner checks families' simulators first; this guards direct use
            raise UserError(f"perturbation {scene_specs[0].name!r} edits the scene; no scene family supports suite robosuite yet")
        self.instruction = INSTRUCTIONS[self.task]
        self.max_steps = MAX_STEPS
        self.raw = _make(self.task, self.image_size)
        with seeded_global_numpy(0):
            self.raw.reset()
        self.model, self.data = self.raw.sim.model._model, self.raw.sim.data._data
        # the controller/gripper state left by the last episode (e.g. the gripper's command) is put back
        # to this at each reset, so an episode does not depend on the one before
        self._pristine_controller = self._controller_state()
        self.goal = GOALS[self.task]
        self.target_object = self.goal[0][1]
        raw = self.raw
        self.object_bodies = {
            "Lift": lambda: {"cube": raw.cube_body_id},
            "PickPlaceCan": lambda: {"can": raw.obj_body_id["Can"]},
            "Stack": lambda: {"cubeA": raw.cubeA_body_id, "cubeB": raw.cubeB_body_id},
        }[self.task]()
        self._regions = self._bin_regions() if self.task == "PickPlaceCan" else {}
        self._init_protocol_state(scene_specs)

    def _bin_regions(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The can's target: its quarter of bin 2 (robosuite's ``not_in_bin`` bounds), from the bin's floor to
        its walls' top (read from the bin's geoms), as a world box."""
        raw, model, data = self.raw, self.model, self.data
        bin_id = raw.object_id  # the can's compartment has the can's index
        low = np.array(raw.bin2_pos[:2], dtype=float)
        if bin_id in (0, 2):
            low[0] -= raw.bin_size[0] / 2
        if bin_id < 2:
            low[1] -= raw.bin_size[1] / 2
        bin2 = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "bin2")
        tops = [data.geom_xpos[g][2] + model.geom_size[g][2] for g in range(model.ngeom) if model.body_rootid[model.geom_bodyid[g]] == bin2]
        lo = np.array([*low, raw.bin2_pos[2]])
        hi = np.array([*(low + np.asarray(raw.bin_size[:2]) / 2), max(tops)])
        return {"can_bin": (lo, hi)}

    def region_box(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """World box (lo, hi) of a named target region (PickPlaceCan's ``can_bin``), None if not a region."""
        return self._regions.get(name)

    def config(self) -> dict:
        """The adapter options a run's manifest records."""
        return {"suite": SUITE, "task": self.task, "task_id": self.task_id, "image_size": self.image_size,
                "robot": "Panda", "controller": "OSC_POSE", "control_hz": self.control_hz, "max_steps": self.max_steps,
                "settle_steps": SETTLE_STEPS, "n_init_states": N_INIT_STATES}

    # --- the protocol's adapter hooks -----------------------------------------------------------------
    def n_init_states(self) -> int:
        return N_INIT_STATES

    def _reset_sim(self, init_index: int) -> None:
        with seeded_global_numpy(init_index):
            self.raw.reset()  # robosuite's placement sampler and robot init noise: the init state
        self._set_controller_state(self._pristine_controller)

    def _set_init(self, init_index: int) -> None:
        pass  # the seeded reset placed everything

    def _settle(self) -> None:
        for _ in range(SETTLE_STEPS):
            self.raw.step(NOOP_ACTION)



def n_init_states(suite: str, task: int) -> int:
    check_suite(suite)
    task_index(task)
    return N_INIT_STATES


SIMULATOR = Simulator(
    name="robosuite", env_class=RobosuiteEnv, suites=SUITE_MAX_STEPS, tasks=suite_tasks,
    n_init_states=n_init_states, value_discount=VALUE_DISCOUNT,
    note="robosuite 1.4 Lift, PickPlaceCan, Stack; Panda, OSC_POSE 7-D delta actions at 20 Hz, seeded placement resets (50 per task)",
    capabilities=frozenset({"object_bodies", "lights"}),  # the state, event, texture and camera families are not validated here yet
    arm_joints=7,
)
