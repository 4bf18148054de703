"""A simulator defined here, not in stress/envs: a tiny MuJoCo scene behind the simulator protocol, added with
``register_simulator``. Families run on it by its declared capabilities, and an episode runs through the
runner, with no edit to any project module."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, as the adapters choose it
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import mujoco  # noqa: E402  (after the GL platform is chosen)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import stress.envs  # noqa: E402
from perturbations.base import registry  # noqa: E402
from stress.core.spec import PerturbationSpec
from stress.core.policy import Decision  # noqa: E402
from stress.core.spec import ScenarioSpec  # noqa: E402
from stress.envs import register_simulator, simulators_supporting  # noqa: E402
from stress.envs.base import SimEnv, Simulator  # noqa: E402
from stress.envs.cache import EnvCache  # noqa: E402
from stress.runners.episode import run_episode

XML = """
<mujoco>
  <worldbody>
    <light name="sun" pos="0 0 2" dir="0 0 -1" diffuse="0.8 0.8 0.8"/>
    <camera name="front" pos="0 -1 0.6" xyaxes="1 0 0 0 0.5 0.87"/>
    <geom name="floor" type="plane" size="1 1 0.1" rgba="0.6 0.6 0.6 1"/>
    <body name="ball" pos="0 0 0.05"><freejoint/><geom type="sphere" size="0.05" rgba="1 0 0 1"/></body>
    <body name="pusher" pos="-0.2 0 0.05">
      <joint name="slide" type="slide" axis="1 0 0" range="-0.5 0.5"/><geom type="box" size="0.02 0.02 0.02"/>
    </body>
  </worldbody>
  <actuator><position joint="slide" kp="50"/></actuator>
</mujoco>
"""


class BallTracker:
    """The failure tracker of the fake task: the ball never moved far enough."""

    def step(self, action):
        pass

    def signature(self, success):
        return "success" if success else "timeout"

    def progress(self, success):
        return 1.0 if success else 0.0

    def onset(self, success):
        return None


class FakeEnv(SimEnv):
    """Push a ball along x with a position-controlled slider; success: the ball is 10 cm further on (the
    episode's 12 steps are too short for it: the test is about the plumbing, not the task)."""

    simulator = "fake"
    cameras = ("front",)
    camera_names = {"front": "front"}
    action_dim = proprio_dim = 1
    control_hz = 20
    chunk_size = 4

    def __init__(self, suite="fake", task_id=0, image_size=64, scene=()):
        self.suite, self.task_id, self.image_size = suite, task_id, image_size
        self.instruction, self.max_steps = "push the ball", 12
        self.model = mujoco.MjModel.from_xml_string(XML)
        self.data = mujoco.MjData(self.model)
        self.object_bodies = {"ball": self.model.body("ball").id}
        self.target_object = "ball"
        self._renderer = mujoco.Renderer(self.model, image_size, image_size)
        self._init_protocol_state(())

    def n_init_states(self):
        return 2

    def _reset_sim(self, init_index):
        mujoco.mj_resetData(self.model, self.data)

    def _set_init(self, init_index):
        self.data.qpos[0] = 0.05 * init_index  # the ball's x
        self._start_x = float(self.data.qpos[0])

    def _physics_step(self, action):
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, 5)

    def success(self):
        return bool(self.data.qpos[0] - self._start_x > 0.1)

    def proprio(self):
        return self.data.qpos[7:8].astype(np.float32)

    def _render_raw(self, camera):
        self._renderer.update_scene(self.data, camera=self.camera_names[camera])
        return self._renderer.render()[::-1]  # the protocol's raw render is bottom-up, as MuJoCo's buffer

    def failure_tracker(self):
        return BallTracker()

    def close(self):
        self._renderer.close()


class Pusher:
    """Slides the pusher forward in chunks of the simulator's size."""

    name, modes, uses_images = "pusher", ("direct",), True

    def reset(self, instruction, seed, **planning):
        self.target = 0.0

    def act(self, obs):
        assert obs.images["front"].shape == (64, 64, 3)
        self.target += 0.1
        return Decision(actions=np.full((FakeEnv.chunk_size, 1), self.target))


class Policies:  # PolicyCache's interface: the runner also names the episode's simulator
    def get(self, name, slot="episode", options=(), simulator=None):
        return Pusher()


@pytest.fixture
def fake():
    register_simulator(Simulator(name="fake", env_class=FakeEnv, suites={"fake": 12}, tasks=lambda suite: ("push the ball",),
                                 n_init_states=lambda suite, task: 2, value_discount=0.99, capabilities=frozenset({"lights"})))
    envs = EnvCache()
    yield envs
    envs.close()
    stress.envs.SIMULATORS.unregister("fake")  # this test's simulator only


def test_the_families_a_simulator_supports_follow_from_its_capabilities(fake):
    supported = {name for name, cls in registry().items() if "fake" in simulators_supporting(cls)}
    assert supported == {"lighting", "image_lighting", "occlusion", "sensor_noise", "policy_noise", "language"}
    assert not stress.envs.simulator("fake").supports(registry()["texture"])  # it declares no textures


def test_an_episode_runs_on_a_registered_simulator_with_a_model_and_a_pixels_family(fake):
    perturbations = (PerturbationSpec("lighting", 3, seed=1), PerturbationSpec("sensor_noise", 2, seed=0))
    spec = ScenarioSpec(suite="fake", task_id=0, init_index=1, policy="pusher", perturbations=perturbations, image_size=64)
    result = run_episode(spec, fake, Policies())
    assert result.error is None and result.steps == 12 and result.failure in ("success", "timeout")
    records = {p["name"]: p for p in result.perturbations}
    assert max(records["lighting"]["realisation"]["image_change"].values()) > 0.5
    assert records["sensor_noise"]["realisation"]["changed_fraction"]["front"] > 0
    again = run_episode(spec, fake, Policies())  # the same env, reset: the same episode
    assert np.array_equal(again.actions, result.actions) and again.steps == result.steps
