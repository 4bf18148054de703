"""The adapter's layer hooks on a real scene: model edits are re-applied after every reset and never leak
into the next episode; scene edits compile into a separate env. Uses two small families defined here."""

import numpy as np
import pytest

from perturbations import base
from perturbations.base import Perturbation
from stress.core.spec import Layer, PerturbationSpec
from perturbations.space import ParamSpace, Real
from stress.core.spec import ScenarioSpec
from stress.envs.cache import EnvCache


class DimLights(Perturbation):
    name = "test_dim_lights"
    layer = Layer.MODEL
    summary = "scale light diffuse"
    severity_meaning = "factor 1 - 0.15 * level"
    space = ParamSpace(Real("factor", 0, 1, "", "factor on every light's diffuse colour", identity=1.0))

    def sample(self, severity, rng, cameras):
        return {"factor": 1 - 0.15 * severity}

    def apply_model(self, env, params):
        env.raw.sim.model.light_diffuse[:] *= params.get("factor", 1.0)


class RedBlock(Perturbation):
    name = "test_red_block"
    layer = Layer.SCENE
    summary = "visual-only red box above the table"
    severity_meaning = "box half size 1 cm * level"
    space = ParamSpace(Real("half_size", 0, 0.1, "m", "half size of the box", identity=0.0))

    def sample(self, severity, rng, cameras):
        return {"half_size": 0.01 * severity}

    def edit_scene(self, xml, params):
        box = f'<geom name="test_red_block" type="box" size="{params["half_size"]} {params["half_size"]} {params["half_size"]}" pos="0 0 1.1" rgba="1 0 0 1" contype="0" conaffinity="0" group="1"/>'
        return xml.replace("<worldbody>", "<worldbody>" + box, 1)


@pytest.fixture
def test_families():
    for cls in (DimLights, RedBlock):
        base.FAMILIES.register(cls.name, cls)
    yield
    for cls in (DimLights, RedBlock):
        base.FAMILIES.unregister(cls.name)


def test_model_edits_are_reapplied_each_reset_and_do_not_leak(spatial_env, test_families):
    env = spatial_env
    env.reset(0)
    clean = env.render("agentview")
    pristine = env.raw.sim.model.light_diffuse.copy()
    dim = (PerturbationSpec("test_dim_lights", 4, seed=0),)
    env.reset(0, dim)
    dimmed = env.render("agentview")
    assert dimmed.mean() < clean.mean() - 5
    env.reset(0, dim)  # applied once per reset, not compounded
    assert np.array_equal(env.render("agentview"), dimmed)
    env.reset(0)
    assert np.array_equal(env.raw.sim.model.light_diffuse, pristine)
    assert np.array_equal(env.render("agentview"), clean)


def test_scene_edits_build_their_own_env(test_families):
    envs = EnvCache(size=2)
    plain = ScenarioSpec(suite="libero_spatial", task_id=1, init_index=0)
    edited = ScenarioSpec(suite="libero_spatial", task_id=1, init_index=0, perturbations=(PerturbationSpec("test_red_block", 3, seed=0),))
    env_plain, env_edited = envs.get(plain), envs.get(edited)
    assert env_plain is not env_edited and envs.get(edited) is env_edited
    model = env_edited.raw.sim.model
    geom = model.geom_name2id("test_red_block")
    assert model.geom_contype[geom] == 0 and np.allclose(model.geom_size[geom], 0.03)
    env_edited.reset(0)  # shipped init states still fit: a visual geom adds no joints
    env_plain.reset(0)
    assert not np.array_equal(env_edited.render("agentview"), env_plain.render("agentview"))
    envs.close()
