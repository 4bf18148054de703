"""ALOHA adapter (gym-aloha 0.1.5 in simulation): seeded init states, render-on-demand, bit-exact snapshots.

One ``AlohaEnv`` wraps one gym-aloha joint-position task, ``transfer_cube`` (task 0) or ``insertion``
(task 1), with the same public surface as ``LiberoEnv`` where it applies. It is built from gym-aloha's
own assets and task classes (their action mapping and their reward), but not through ``gym.make``:

* gym-aloha's stock loop renders three 640x480 cameras at *every* step (~4.5 steps/s on this CPU). Here
  the physics is stepped directly and cameras are rendered only when ``observe(render=True)`` asks, at
  ``image_size`` (224 px, the size Cosmos Policy's ALOHA setting feeds its model).
* The scene's one shadow-casting light costs most of a render; shadows are off unless ``shadows=True``
  (recorded in ``config()``, which the runner writes into the manifest).
* The registered step limit (300) is too short: insertion first succeeds around step 355. Ours is 400.
* gym-aloha seeds the object poses through a module-global ``BOX_POSE``; init state ``i`` here is
  gym-aloha's own seeded sampler with seed ``i`` (the same pose ``gym.make(...).reset(seed=i)`` gives),
  set on the data directly.
* dm_control's ``get_state`` leaves out the warm start, ctrl and time, so a replay drifts (2e-3 rad after
  60 steps); ``snapshot`` uses ``mj_getState(mjSTATE_INTEGRATION)`` instead, which replays bit-exactly.

Actions are 14-D absolute joint positions (per arm: 6 joints, then the gripper normalised 0 closed ..
1 open); a policy's chunk (50 steps in Cosmos's ALOHA setting) is executed whole by the runner.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import cache

import numpy as np

from stress.core.aloha import CHUNK, MAX_STEPS, SUBSTEPS, asset_path
from stress.core.errors import UserError, choice_error

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, as stress.envs.libero_setup does
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco  # noqa: E402  (after the GL platform is chosen)

from perturbations.base import family, parameters_for  # noqa: E402
from stress.core.spec import Layer
from stress.envs.base import SimEnv, Simulator, named_task_index  # noqa: E402
from stress.envs.scene import SceneQuery  # noqa: E402

SUITE = "aloha"
SUITES = (SUITE,)
TASKS = ("transfer_cube", "insertion")  # task id = index
# gym-aloha ships no task descriptions; these are LeRobot's for its aloha_sim_* datasets
INSTRUCTIONS = {
    "transfer_cube": "Pick up the cube with the right arm and transfer it to the left arm.",
    "insertion": "Insert the peg into the socket.",
}
XML = {"transfer_cube": "bimanual_viperx_transfer_cube.xml", "insertion": "bimanual_viperx_insertion.xml"}
CAMERAS = ("top", "left_wrist", "right_wrist")
# image_size STOCK_SIZE asks for gym-aloha's own cameras: 480 high x 640 wide with the scene's shadows on, what
# gym-aloha's stock env (and so LeRobot's gym_aloha env and openpi's ALOHA client) renders; a policy trained on
# those frames sees the same pixels
STOCK_SIZE = 480
STOCK_SHAPE = (480, 640)
N_INIT_STATES = 50  # init state i = gym-aloha's seeded object pose with seed i
SUITE_MAX_STEPS = {SUITE: MAX_STEPS}  # as stress.envs.libero's
VALUE_DISCOUNT = 0.998  # Cosmos Policy's value discount for ALOHA
ACTION_DIM = 14
MAX_REWARD = 4  # gym-aloha's is_success: reward 4 (left gripper holds the lifted cube / peg touches the pin)
ROBOT_QPOS = 16  # two arms x (6 joints + 2 finger slides); object free joints follow
# the bodies the task is about (object_position names), per task
TASK_OBJECTS = {"transfer_cube": ("box",), "insertion": ("peg", "socket")}
ARMS = ("left", "right")  # qpos: left arm's 6 joints + 2 fingers, then the right arm's
ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
# gym-aloha's sampling box of each object (gym_aloha.utils sample_box_pose / sample_insertion_pose: x, y
# corners, m); every sampled pose has yaw 0. What the policies trained on gym-aloha's data have seen.
INIT_BOX = {"box": ((0.0, 0.4), (0.2, 0.6)), "peg": ((0.1, 0.4), (0.2, 0.6)), "socket": ((-0.2, 0.4), (-0.1, 0.6))}
GRASPED_BY = {"box": "right", "peg": "right", "socket": "left"}  # the arm that picks each object up
# ViperX 300 reach for a grasp pitched 60 deg down (the expert's): the wrist_angle joint sits 0.205 m behind
# the grasp point along the gripper, i.e. 0.10 m towards the arm and 0.18 m up; shoulder to wrist is at most
# 0.606 m (upper arm 0.306 + forearm 0.300), kept 5 cm inside (stretched = singular); closer than 0.2 m to
# the arm's base, the hand folds into the arm's own links.
WRIST_BACK, WRIST_UP, MAX_REACH, MIN_RADIUS = 0.1025, 0.1775, 0.556, 0.2
PROBE_STEPS = 50  # 1 s: a dropped object has landed and come to rest


def suite_tasks(suite: str = SUITE) -> tuple[str, ...]:
    """Instructions of the suite's tasks, in task-id order."""
    check_suite(suite)
    return tuple(INSTRUCTIONS[t] for t in TASKS)


def check_suite(suite: str) -> None:
    if suite != SUITE:
        raise choice_error("suite", suite, SUITES)


def task_index(task: int | str) -> int:
    """Task id of a task given by id (0, 1, "0") or name ("transfer_cube", "insertion")."""
    return named_task_index("aloha", task, TASKS)


@cache
def init_states(suite: str, task_id: int | str) -> np.ndarray:
    """The init states of a task: ``N_INIT_STATES`` object poses (x y z qw qx qy qz per object), row i from
    gym-aloha's own sampler seeded with i."""
    check_suite(suite)
    from gym_aloha.utils import sample_box_pose, sample_insertion_pose

    task = TASKS[task_index(task_id)]
    if task == "transfer_cube":
        rows = [sample_box_pose(seed) for seed in range(N_INIT_STATES)]
    else:
        rows = [np.concatenate(sample_insertion_pose(seed)) for seed in range(N_INIT_STATES)]
    out = np.asarray(rows, dtype=np.float64)
    out.flags.writeable = False  # cached: shared by every caller
    return out


# Surfaces the texture family can edit: the stock scene has no textures, so the table gets a blank (white)
# texture under its own grey rgba and the scene a black skybox backdrop. White x rgba and a black skybox
# render exactly like the stock scene (tested), so the clean images stay gym-aloha's.
TABLE_TEXTURE, BACKDROP_TEXTURE = "stress_table", "stress_backdrop"
TABLE_TEXTURE_PX, BACKDROP_TEXTURE_PX = 256, 64  # skybox: 6 faces of 64 x 64


def add_surface_textures(spec: "mujoco.MjSpec") -> None:
    """Give the table a blank texture and the scene a black backdrop (see TABLE_TEXTURE)."""
    flat = mujoco.mjtBuiltin.mjBUILTIN_FLAT
    spec.add_texture(name=TABLE_TEXTURE, type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=flat,
                     width=TABLE_TEXTURE_PX, height=TABLE_TEXTURE_PX, rgb1=[1, 1, 1], rgb2=[1, 1, 1])
    material = spec.add_material(name=TABLE_TEXTURE)
    material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = TABLE_TEXTURE
    spec.geom("table").material = TABLE_TEXTURE  # its explicit rgba (0.2 grey) still colours it
    spec.add_texture(name=BACKDROP_TEXTURE, type=mujoco.mjtTexture.mjTEXTURE_SKYBOX, builtin=flat,
                     width=BACKDROP_TEXTURE_PX, height=BACKDROP_TEXTURE_PX, rgb1=[0, 0, 0], rgb2=[0, 0, 0])


def build_physics(xml_name: str, scene=()):
    """A dm_control ``Physics`` of one gym-aloha scene, compiled through ``MjSpec`` so scene edits
    (textures, bodies) can be made on the spec before compiling. ``scene``: scene-layer
    ``PerturbationSpec``s whose family has an ``edit_spec(spec, params)`` hook."""
    from dm_control import mujoco as dm_mujoco
    from dm_control.mujoco.wrapper import MjModel

    spec = mujoco.MjSpec.from_file(str(asset_path(xml_name)))
    add_surface_textures(spec)
    for scene_spec in scene:
        fam = family(scene_spec.name)
        if not hasattr(fam, "edit_spec"):
            raise UserError(f"perturbation {scene_spec.name!r} is not available on suite aloha yet (its family has no MjSpec edit)")
        fam.edit_spec(spec, parameters_for(scene_spec))
    # dm_control needs its own model wrapper (a raw mujoco.MjModel fails inside Physics)
    return dm_mujoco.Physics.from_model(MjModel(spec.compile()))


class AlohaFailureTracker:
    """How an ALOHA episode failed, from simulator state after every step (never from images), in the
    vocabulary of ``stress.envs.signatures``: gym-aloha's stage reward says how far the task got (2: the object(s)
    lifted in hand, 3: the hand-over / the peg in the socket's mouth), contacts say what went wrong.

    * ``collision``: an arm link (base to wrist, not the gripper or fingers) touched the table or an object;
    * ``never_grasped``: the object(s) were never lifted in hand (stage reward < 2);
    * ``dropped``: a task object touched the table again after being lifted;
    * ``timeout_near_goal``: stage 3 reached (the left hand touched the cube / the peg touched the socket);
    * ``timeout``: lifted, but no further in time.

    ``progress`` is the best stage over 4 (1 when solved, at most 0.99 otherwise); ``onset`` the step of the
    first arm collision or of the drop.
    """

    def __init__(self, env: "AlohaEnv"):
        self.env = env
        model = env.model
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or "" for g in range(model.ngeom)]
        self.arm = {g for g, n in enumerate(names) if n.startswith("vx300s_") and "gripper" not in n and "finger" not in n}
        self.objects = {g for g in range(model.ngeom) if model.body_rootid[model.geom_bodyid[g]] in
                        {model.body(name).id for name in TASK_OBJECTS[env.task]}}
        self.table = {names.index("table")}
        self.lifted = False
        self.collision_step: int | None = None
        self.drop_step: int | None = None

    def step(self, action: np.ndarray) -> None:
        data = self.env.data
        pairs = [(c.geom1, c.geom2) for c in data.contact[: data.ncon]]
        for a, b in pairs + [(b, a) for a, b in pairs]:
            if a in self.arm and (b in self.table or b in self.objects) and self.collision_step is None:
                self.collision_step = self.env.step_count
            if a in self.objects and b in self.table and self.lifted and self.drop_step is None:
                self.drop_step = self.env.step_count
        if self.env.reward >= 2:
            self.lifted, self.drop_step = True, None  # (re)lifted: an earlier touch-down was not the failure

    def signature(self, success: bool) -> str:
        if success:
            return "success"
        if self.collision_step is not None:
            return "collision"
        if not self.lifted:
            return "never_grasped"
        if self.drop_step is not None:
            return "dropped"
        return "timeout_near_goal" if self.env.max_reward >= 3 else "timeout"

    def progress(self, success: bool) -> float:
        return 1.0 if success else min(0.99, self.env.max_reward / MAX_REWARD)

    def onset(self, success: bool) -> int | None:
        signature = self.signature(success)
        return {"collision": self.collision_step, "dropped": self.drop_step}.get(signature)


class AlohaScene(SceneQuery):
    """ALOHA's answers: bodies and sites by name, the two ViperX arms (joints, grasp points, reach), gym-aloha's
    sampling box as the init range, and a probe settle as the view validity checks judge."""

    def object_position(self, name: str) -> np.ndarray:
        """World position (m) of a body ("box", "peg", "socket", "vx300s_left/gripper_link", ...) or a site."""
        model, data = self.model, self.data
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if body >= 0:
            return data.xpos[body].copy()
        site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)
        if site >= 0:
            return data.site_xpos[site].copy()
        raise KeyError(name)

    def arm_joints(self) -> np.ndarray:
        """Left arm's 6 joints, then the right arm's (waist .. wrist_rotate)."""
        return np.array([self.model.joint(f"vx300s_{arm}/{j}").id for arm in ARMS for j in ARM_JOINTS])

    def gripper_qpos_indexes(self) -> np.ndarray:
        return np.array([6, 7, 14, 15])

    def grip_points(self) -> np.ndarray:
        """Per arm (left, right) the midpoint of its two finger pads."""
        xpos = self.data.geom_xpos
        return np.array([(xpos[self.model.geom(f"vx300s_{arm}/10_left_gripper_finger").id]
                          + xpos[self.model.geom(f"vx300s_{arm}/10_right_gripper_finger").id]) / 2 for arm in ARMS])

    def arm_moved(self, offsets: np.ndarray) -> None:
        # position actuators, one per joint in qpos order: command the new posture so the arms hold it
        qpos = self.model.jnt_qposadr[self.arm_joints()]
        self.data.ctrl[qpos] = self.data.qpos[qpos]

    def reach_problem(self, name: str, position: np.ndarray) -> str | None:
        arm = GRASPED_BY[name]
        base = self.data.xpos[self.model.body(f"vx300s_{arm}").id]
        shoulder = self.data.xanchor[self.model.joint(f"vx300s_{arm}/shoulder").id]
        towards = base[:2] - position[:2]
        radius = float(np.linalg.norm(towards))
        if radius < MIN_RADIUS:
            return f"{name} too close to the {arm} arm's base ({radius:.2f} m; min {MIN_RADIUS})"
        wrist = np.array([*(position[:2] + WRIST_BACK * towards / radius), position[2] + WRIST_UP])
        reach = float(np.linalg.norm(wrist - shoulder))
        if reach > MAX_REACH:
            return f"{name} out of the {arm} arm's reach ({reach:.2f} m from its shoulder to the wrist; max {MAX_REACH})"
        return None

    def init_range(self, name: str) -> dict:
        lo, hi = INIT_BOX[name]
        return {"lo": np.array(lo), "hi": np.array(hi), "yaw": (0.0, 0.0)}

    @contextmanager
    def settled_view(self):
        """ALOHA's episodes start with the objects a few cm above the table (no settle steps): the checks judge
        the scene after ``PROBE_STEPS`` steps with the arms holding still, on a snapshot put back afterwards."""
        snap = self.env.snapshot()
        hold = self.env.proprio().astype(np.float64)
        try:
            for _ in range(PROBE_STEPS):
                self.env._physics_step(hold)
            yield
        finally:
            self.env.restore(snap)


class AlohaEnv(SimEnv):
    """One gym-aloha task (``suite="aloha"``), reusable across init states and non-scene perturbations.

    ``task_id``: 0 / "transfer_cube" or 1 / "insertion". ``image_size``: square render size in pixels, or ``STOCK_SIZE`` (480) for gym-aloha's own 480x640 cameras with shadows.
    ``scene``: perturbation specs; the scene-layer ones are compiled in (the rest is per ``reset``), like
    ``LiberoEnv``. ``shadows``: whether the scene's shadow-casting light casts shadows (off by default: it is
    most of the render cost).
    """

    simulator = "aloha"
    cameras = CAMERAS
    camera_names = {c: c for c in CAMERAS}
    visual_geom_groups = (0, 1)  # gym-aloha renders every geom (the table is group 1, the rest 0)
    action_dim = ACTION_DIM
    proprio_dim = ACTION_DIM  # gym-aloha's agent_pos: per arm 6 joints and the normalised gripper
    control_hz = 50
    chunk_size = CHUNK
    scene_class = AlohaScene
    value_discount = VALUE_DISCOUNT

    def __init__(self, suite: str = SUITE, task_id: int | str = 0, image_size: int = 224, scene=(), shadows: bool = False):
        check_suite(suite)
        from gym_aloha.tasks.sim import InsertionTask, TransferCubeTask

        self.suite = suite
        self.task_id = task_index(task_id)
        self.task = TASKS[self.task_id]
        self.image_size = int(image_size)
        self.shadows = bool(shadows) or self.image_size == STOCK_SIZE
        self.instruction = INSTRUCTIONS[self.task]
        self.max_steps = MAX_STEPS
        scene_specs = tuple(s for s in scene if family(s.name).layer is Layer.SCENE)
        self.physics = build_physics(XML[self.task], scene_specs)
        self.model, self.data = self.physics.model._model, self.physics.data._data
        if not self.shadows:
            self.model.light_castshadow[:] = 0
        # gym-aloha's task: the action mapping (normalised gripper -> finger targets) and the reward
        self._task = TransferCubeTask() if self.task == "transfer_cube" else InsertionTask()
        self._object_qpos = {}  # object body -> its free joint's qpos address
        for name in TASK_OBJECTS[self.task]:
            body = self.model.body(name)
            self._object_qpos[name] = int(self.model.jnt_qposadr[self.model.body_jntadr[body.id]])
        self.object_bodies = {name: self.model.body(name).id for name in TASK_OBJECTS[self.task]}
        self.target_object = TASK_OBJECTS[self.task][0]
        self.surface_textures = {"walls": (self.model.texture(BACKDROP_TEXTURE).id,)}  # the backdrop is on no geom
        self.canvas_textures = frozenset({self.model.texture(TABLE_TEXTURE).id})
        # what success means, as (predicate, object, target) like LIBERO's goal: the signatures read it
        self.goal = [["held_by", "box", "vx300s_left/gripper_link"]] if self.task == "transfer_cube" else [["in", "peg", "socket"]]
        self.init_index: int | None = None
        self.initial_object_qpos = np.zeros(self.model.nq - ROBOT_QPOS)
        self._reward = self._max_reward = 0
        self._init_protocol_state(scene_specs)

    def config(self) -> dict:
        """The adapter options a run's manifest records."""
        return {"suite": SUITE, "task": self.task, "task_id": self.task_id, "image_size": self.image_size,
                "image_shape": list(self.image_shape), "shadows": self.shadows, "cameras": list(CAMERAS), "max_steps": self.max_steps, "chunk": CHUNK,
                "value_discount": VALUE_DISCOUNT, "substeps": SUBSTEPS, "n_init_states": N_INIT_STATES}

    # --- the protocol's adapter hooks -----------------------------------------------------------------
    def n_init_states(self) -> int:
        return N_INIT_STATES

    def _reset_sim(self, init_index: int) -> None:
        """Arms and ctrl at gym-aloha's start pose, everything at rest, the reward counters cleared."""
        from gym_aloha.constants import START_ARM_POSE

        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:ROBOT_QPOS] = START_ARM_POSE
        self.data.ctrl[:] = START_ARM_POSE
        self._reward = self._max_reward = 0
        self.init_index = int(init_index)

    def _set_init(self, init_index: int) -> None:
        """The objects at init state ``init_index`` (gym-aloha's seeded pose), then poses and contacts computed."""
        self.data.qpos[ROBOT_QPOS:] = init_states(SUITE, self.task_id)[init_index]
        mujoco.mj_forward(self.model, self.data)  # what dm_control's reset_context ends with

    def _settle(self) -> None:
        # no settle steps on ALOHA (gym-aloha starts acting at once); the objects' poses the episode starts
        # from, after any state perturbation, are what the expert's open-loop plan is made from
        self.initial_object_qpos = self.data.qpos[ROBOT_QPOS:].copy()

    def _physics_step(self, action: np.ndarray) -> None:
        """One 50 Hz control step of a checked 14-D action: gym-aloha's action mapping, 10 physics steps, its reward."""
        self._task.before_step(action, self.physics)
        self.physics.step(SUBSTEPS)
        self._reward = int(self._task.get_reward(self.physics))
        self._max_reward = max(self._max_reward, self._reward)

    def _forward(self) -> None:
        # dm_control's legacy step ends with mj_step1: poses and contacts already match qpos, so renders and
        # restored snapshots see the same state without another mj_forward
        pass

    def _extra_state(self) -> dict:
        """What a snapshot needs beyond MuJoCo's state: the episode's rewards."""
        return {"reward": self._reward, "max_reward": self._max_reward}

    def _set_extra_state(self, state: dict) -> None:
        self._reward, self._max_reward = state["reward"], state["max_reward"]

    def success(self) -> bool:
        """gym-aloha's is_success: the stage reward reached 4 at some step of the episode."""
        return self._max_reward >= MAX_REWARD

    @property
    def reward(self) -> int:
        """gym-aloha's stage reward at the last step (0-4)."""
        return self._reward

    @property
    def max_reward(self) -> int:
        """The best stage reward of the episode so far (4: solved)."""
        return self._max_reward

    def proprio(self) -> np.ndarray:
        """14-D joint positions (gym-aloha's agent_pos: per arm 6 joints, then the gripper normalised 0-1)."""
        return self._task.get_qpos(self.physics).astype(np.float32)

    def failure_tracker(self) -> AlohaFailureTracker:
        return AlohaFailureTracker(self)

    # --- rendering ----------------------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int]:
        return STOCK_SHAPE if self.image_size == STOCK_SIZE else (self.image_size, self.image_size)

    def _make_current(self) -> None:
        """Make this env's GL context current. dm_control remembers which of *its* contexts is current and
        skips the switch when it thinks it is ours, but another simulator in the process (robosuite/LIBERO)
        may have made its own current since: without this, a render (or freeing the context) would use
        that other context."""
        gl = self.physics.contexts.gl
        with gl.make_current() as ctx:
            ctx.call(gl._platform_make_current)

    def _render_context(self, camera: str | None = None):
        self._make_current()
        return self.physics.contexts.mujoco.ptr, None, None

    def _render_raw(self, camera: str) -> np.ndarray:
        self._make_current()
        # dm_control hands out upright images; the protocol's raw render is MuJoCo's bottom-up buffer
        height, width = self.image_shape
        return self.physics.render(height=height, width=width, camera_id=camera)[::-1]

    def segmentation(self, camera: str) -> np.ndarray:
        """Upright map of MuJoCo geom ids seen by ``camera`` (-1: background or a non-geom)."""
        self.check_camera(camera)
        self._make_current()
        height, width = self.image_shape
        seg = self.physics.render(height=height, width=width, camera_id=camera, segmentation=True)
        return np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1).astype(np.int32)

    # --- scene queries (the rest: AlohaScene) --------------------------------------------------------------
    def object_pose(self, name: str) -> np.ndarray:
        """x y z qw qx qy qz of a task object's free joint ("box", "peg", "socket")."""
        adr = self._object_qpos[name]
        return self.data.qpos[adr : adr + 7].copy()

    def close(self) -> None:
        """Free the GL context and MuJoCo data (the env is unusable afterwards)."""
        if self.physics is not None:
            if self.physics._contexts:  # rendered at least once: free our GL objects in our own context
                self._make_current()
            self.physics.free()
            self.physics = None


SIMULATOR = Simulator(
    name="aloha", env_class=AlohaEnv, suites=SUITE_MAX_STEPS, tasks=suite_tasks,
    n_init_states=lambda suite, task: N_INIT_STATES, value_discount=VALUE_DISCOUNT, default_image_size=224,
    image_sizes=(64, 128, 224, 256, STOCK_SIZE),
    note="gym-aloha 0.1.5 bimanual ViperX, 14-D joint positions at 50 Hz, seeded object poses (50 per task), shadows off",
    capabilities=frozenset({"object_bodies", "lights", "textures", "camera_poses", "movable_objects", "arm_joints", "grip_points"}),
    arm_joints=2 * len(ARM_JOINTS),
)
