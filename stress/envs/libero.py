"""LIBERO adapter: shipped init states, settle steps, render-on-demand, snapshots, perturbation hooks.

One ``LiberoEnv`` wraps one LIBERO task (a compiled MuJoCo scene). It is reset to any shipped init
state, runs the 10 no-op settle steps LIBERO evaluations use, and renders the two cameras only when
``observe(render=True)`` is called (once per policy query), which is what makes a CPU episode ~8x
cheaper than the usual render-every-step loop. Images are handed out upright (vertically flipped from
MuJoCo's bottom-up buffer), the orientation Cosmos Policy's LIBERO code feeds its model.

Perturbation hooks, by layer (perturbations/base.py):
    scene   XML edit before compile; a scene-edited env is a different env (cached by the runner)
    model   applied after every reset, on top of the pristine model fields restored first
    state   after ``set_init_state`` and before settling
    event   after every env step
    pixels  on each rendered camera image
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from perturbations.base import family, parameters_for
from stress.core.errors import InvalidScene
from stress.core.spec import Layer, PerturbationSpec
from perturbations.object_pose import free_joint, quat_to_mat, relative_yaw_deg
from stress.envs.base import Simulator, SimulatorFault, family_layer, scene_key  # noqa: F401  (re-exported: SimulatorFault)
from stress.envs.libero_setup import cache_dir, import_libero
from stress.envs.robosuite_base import NOOP_ACTION, PandaScene, RobosuiteSimEnv, seeded_global_numpy  # noqa: F401  (re-exported: NOOP_ACTION)
from stress.core.errors import UserError, choice_error

SUITE_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
SUITES = tuple(SUITE_MAX_STEPS)
SETTLE_STEPS = 10


@cache
def _benchmark(suite: str):
    """LIBERO's benchmark object of a suite (it prints its task order to stdout when built: silenced)."""
    import_libero()
    from libero.libero import benchmark

    with redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite]()


@cache
def suite_tasks(suite: str) -> tuple[str, ...]:
    """Instructions of a suite's tasks, in LIBERO's task order."""
    if suite not in SUITES:
        raise choice_error("suite", suite, SUITES)
    bench = _benchmark(suite)
    return tuple(bench.get_task(i).language for i in range(bench.n_tasks))


SCENE_PREFIX = re.compile(r"^([A-Z]+(?:_[A-Z]+)*_SCENE\d+)_")  # libero_10 / libero_90: KITCHEN_SCENE3_turn_on_the_stove...


def scene_name(suite: str, task_id: int) -> str:
    """The scene a task is set in: its BDDL file's scene prefix (libero_10, libero_90), else the suite (libero_spatial,
    libero_object and libero_goal share one scene per suite: one layout, one fixture set)."""
    match = SCENE_PREFIX.match(_benchmark(suite).get_task(task_id).bddl_file)
    return match.group(1) if match else suite


@cache
def same_scene_tasks(suite: str, task_id: int) -> tuple[tuple[int, str], ...]:
    """(task id, instruction) of the suite's other tasks set in the same scene (``scene_name``)."""
    check_task(suite, task_id)
    here = scene_name(suite, task_id)
    return tuple((i, text) for i, text in enumerate(suite_tasks(suite)) if i != task_id and scene_name(suite, i) == here)


def check_task(suite: str, task_id: int) -> None:
    n = len(suite_tasks(suite))
    if not 0 <= task_id < n:
        raise UserError(f"task {task_id} not in suite {suite}; valid: 0-{n - 1}")


@cache
def init_states(suite: str, task_id: int) -> np.ndarray:
    """The shipped init states of a task (usually 50 flattened MuJoCo states)."""
    check_task(suite, task_id)
    return np.asarray(_benchmark(suite).get_task_init_states(task_id))


def _make_control_env(bddl: Path, image_size: int, offscreen: bool):
    from libero.libero.envs.env_wrapper import ControlEnv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ControlEnv(
            bddl_file_name=str(bddl),
            camera_heights=image_size,
            camera_widths=image_size,
            has_renderer=False,
            has_offscreen_renderer=offscreen,
            use_camera_obs=False,  # we render on demand instead of every step
            hard_reset=False,
            ignore_done=True,  # the episode length is ours (suite max steps)
        )


@cache
def _joint_layout(bddl: Path) -> tuple[tuple[str, int, int, int, int], ...]:
    """(joint name, qpos address, nq, dof address, nv) of every joint of the original scene, in order."""
    control = _make_control_env(bddl, 64, offscreen=False)
    model = control.env.sim.model._model
    sizes = {mujoco.mjtJoint.mjJNT_FREE: (7, 6), mujoco.mjtJoint.mjJNT_BALL: (4, 3)}
    layout = []
    for j in range(model.njnt):
        nq, nv = sizes.get(model.jnt_type[j], (1, 1))
        layout.append((mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j), int(model.jnt_qposadr[j]), nq, int(model.jnt_dofadr[j]), nv))
    control.close()
    return tuple(layout)


class LiberoScene(PandaScene):
    """A LIBERO scene's answers: its objects (and sites) by name, the movable ones, where the shipped init
    states put them."""

    def object_position(self, name: str) -> np.ndarray:
        raw = self.env.raw
        if name in raw.obj_body_id:
            return np.array(self.sim.data.body_xpos[raw.obj_body_id[name]])
        if raw.object_sites_dict.get(name) is not None:
            return np.array(self.sim.data.site_xpos[self.sim.model.site_name2id(name)])
        raise KeyError(name)

    def movable_objects(self) -> list[str]:
        return list(self.env.raw.objects_dict)  # obj_body_id also holds the fixtures

    def other_tasks(self) -> tuple[tuple[int, str], ...]:
        return same_scene_tasks(self.env.suite, self.env.task_id)

    def init_range(self, name: str) -> dict[str, Any]:
        """Box of the object's (x, y) over the shipped init states, and their yaw range (deg) relative to the
        object's current (shipped) pose. An object the shipped states do not hold (a distractor added by a
        scene edit) has the one-point range of its current pose."""
        env, model, data = self.env, self.model, self.data
        qadr, _ = free_joint(env, name)
        current = data.qpos[qadr : qadr + 7].copy()
        shipped_qadr = qadr
        if env._state_layout is not None:  # scene-edited env: the states use the original scene's addresses
            joint = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, model.body_jntadr[env.raw.obj_body_id[name]])
            shipped_qadr = next((q for n, q, *_ in env._state_layout if n == joint), None)
        if shipped_qadr is None:
            poses = current[None]
        else:
            poses = init_states(env.suite, env.task_id)[:, 1 + shipped_qadr : 1 + shipped_qadr + 7]
        yaws = [relative_yaw_deg(quat_to_mat(q[3:]), quat_to_mat(current[3:])) for q in poses]
        return {"lo": poses[:, :2].min(axis=0), "hi": poses[:, :2].max(axis=0), "yaw": (min(yaws), max(yaws))}


class LiberoEnv(RobosuiteSimEnv):
    """One LIBERO task, reusable across init states and non-scene perturbations."""

    simulator = "libero"
    settle_steps = SETTLE_STEPS
    scene_class = LiberoScene

    def __init__(self, suite: str, task_id: int, image_size: int = 128, scene: tuple[PerturbationSpec, ...] = ()):
        check_task(suite, task_id)
        libero = import_libero()
        task = _benchmark(suite).get_task(task_id)
        bddl = Path(libero.get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        self.suite, self.task_id, self.image_size = suite, task_id, image_size
        self.instruction = task.language
        self.max_steps = SUITE_MAX_STEPS[suite]
        scene_specs = tuple(s for s in scene if family_layer(s) is Layer.SCENE)  # the rest is per reset
        scene_params = [(family(spec.name), parameters_for(spec)) for spec in scene_specs]
        edited_bddl = self._edited_bddl(bddl, scene_params)
        # shipped init states are flat [time, qpos, qvel] of the original model: map them by joint name
        # when the BDDL edit added objects (their joints keep LIBERO's placement, seeded per init index)
        self._state_layout = _joint_layout(bddl) if edited_bddl != bddl else None
        self._control = _make_control_env(edited_bddl, image_size, offscreen=True)
        self.raw = self._control.env  # the robosuite/LIBERO domain env (privileged access)
        if any(fam.edits_xml(params) for fam, params in scene_params):
            self._rebuild_with_scene_edits(scene_params)
        self._reset_with_fixture_seed(0)
        self.model, self.data = self.raw.sim.model._model, self.raw.sim.data._data
        # controller/gripper state carries over between episodes (e.g. the gripper's last command):
        # restoring it at each reset makes an episode independent of the one before
        self._pristine_controller = self._controller_state()
        goal = self.raw.parsed_problem["goal_state"]
        self.goal = [list(map(str, g)) for g in goal]
        self.target_object = self.goal[0][1] if self.goal and len(self.goal[0]) > 1 else self.raw.obj_of_interest[0]
        self.object_bodies = dict(self.raw.obj_body_id)
        self._init_protocol_state(scene_specs)

    # --- building --------------------------------------------------------------------------------------
    @staticmethod
    def _edited_bddl(bddl: Path, scene_params) -> Path:
        """Apply the scene families' BDDL edits to a copy in the cache folder (the original stays untouched)."""
        text = bddl.read_text()
        edited = text
        for fam, params in scene_params:
            edited = fam.edit_bddl(edited, params)
        if edited == text:
            return bddl
        digest = hashlib.sha256(edited.encode()).hexdigest()[:16]
        path = cache_dir() / "bddl" / f"{bddl.stem}-{digest}.bddl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(edited)
            tmp.replace(path)
        return path

    def _rebuild_with_scene_edits(self, scene_params) -> None:
        def process(xml: str) -> str:
            for fam, params in scene_params:
                xml = fam.edit_scene(xml, params)
            return xml

        self.raw.set_xml_processor(process)
        self.raw.hard_reset = True
        self._control.reset()
        self.raw.hard_reset = False

    def _map_init_state(self, state: np.ndarray) -> np.ndarray:
        """A shipped init state of the original scene as a state of this (edited) scene."""
        if self._state_layout is None:
            return state
        model, data = self.model, self.data
        out = np.concatenate([[data.time], data.qpos, data.qvel])
        nq_original = sum(n for _, _, n, _, _ in self._state_layout)
        for name, qadr, nq, vadr, nv in self._state_layout:
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if joint < 0:
                raise InvalidScene(f"scene edit removed joint {name!r} that the init state sets")
            out[1 + model.jnt_qposadr[joint] : 1 + model.jnt_qposadr[joint] + nq] = state[1 + qadr : 1 + qadr + nq]
            v_new = 1 + model.nq + model.jnt_dofadr[joint]
            out[v_new : v_new + nv] = state[1 + nq_original + vadr : 1 + nq_original + vadr + nv]
        out[0] = state[0]
        return out

    # --- the protocol's adapter hooks -----------------------------------------------------------------
    def n_init_states(self) -> int:
        return len(init_states(self.suite, self.task_id))

    def _reset_sim(self, init_index: int) -> None:
        self._reset_with_fixture_seed(init_index)
        self._set_controller_state(self._pristine_controller)

    def _set_init(self, init_index: int) -> None:
        self._control.set_init_state(self._map_init_state(init_states(self.suite, self.task_id)[init_index]))

    def _settle(self) -> None:
        for _ in range(SETTLE_STEPS):
            self.raw.step(NOOP_ACTION)

    def _reset_with_fixture_seed(self, init_index: int) -> None:
        """LIBERO re-samples fixture placements (cabinet, stove: model body_pos, not in the init state)
        from the *global* numpy RNG at every reset, so its own evals depend on episode order. We seed
        that draw with the init index and put the caller's global RNG state back afterwards."""
        with seeded_global_numpy(init_index):
            self._control.reset()

    def _close_env(self) -> None:
        self._control.close()


SIMULATOR = Simulator(
    name="libero", env_class=LiberoEnv, suites=SUITE_MAX_STEPS, tasks=suite_tasks,
    n_init_states=lambda suite, task: len(init_states(suite, task)), value_discount=0.99,
    note="robosuite 1.4 Panda, OSC_POSE 7-D delta actions at 20 Hz, shipped init states (50 per task)",
    capabilities=frozenset({"object_bodies", "lights", "textures", "camera_poses", "movable_objects", "arm_joints", "grip_points",
                            "scene_xml", "bddl_scene"}),
    arm_joints=7,
)
