"""Object semantics (perturbations/object_swap.py): the target's class swapped in a BDDL copy, on the text (cheap)
and on one real scene (the white bowl is the target, at the shipped init state's pose, visible, recorded)."""

from pathlib import Path

import numpy as np
import pytest

from perturbations.base import family, parameters_for
from perturbations.distractors import _Task
from perturbations.object_swap import SWAPPABLE, ObjectSwap
from stress.core.errors import NotRealised, UserError
from stress.core.spec import PerturbationSpec, ScenarioSpec
from stress.envs.cache import EnvCache
from stress.envs.libero import _benchmark
from stress.envs.libero_setup import import_libero


def shipped_bddl(suite: str, task_id: int) -> str:
    import_libero()
    from libero.libero import get_libero_path  # importable once import_libero has set LIBERO's paths

    task = _benchmark(suite).get_task(task_id)
    return (Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file).read_text()


def test_only_the_target_changes_class_and_the_goal_is_kept():
    bddl = shipped_bddl("libero_spatial", 0)
    before, after = _Task(bddl), _Task(ObjectSwap().edit_bddl(bddl, parameters_for(PerturbationSpec("object_swap", 3, seed=1))))
    assert after.objects[before.target] == "white_bowl" and before.target_category == "akita_black_bowl"
    assert {n: c for n, c in after.objects.items() if n != before.target} == {n: c for n, c in before.objects.items() if n != before.target}
    assert (after.target, after.goal, after.init) == (before.target, before.goal, before.init)  # same instance, goal and placement
    assert ObjectSwap().edit_bddl(bddl, {"swap": "none"}) == bddl


def test_a_target_without_another_instance_is_not_realised_and_bad_categories():
    grocery = shipped_bddl("libero_object", 0)  # a grocery item: one instance of its category
    with pytest.raises(NotRealised, match="has no other instance"):
        ObjectSwap().edit_bddl(grocery, {"swap": "instance", "pick": 0.0})
    with pytest.raises(NotRealised, match="not another instance of the target's 'akita_black_bowl'; valid: white_bowl"):
        ObjectSwap().edit_bddl(shipped_bddl("libero_spatial", 0), {"swap": "instance", "category": "red_coffee_mug"})
    with pytest.raises(UserError, match="object_swap category 'teapot' unknown; valid: " + ", ".join(SWAPPABLE)):
        family("object_swap").check_params({"swap": "instance", "category": "teapot"})


def test_the_white_bowl_is_the_target_at_the_shipped_pose(spatial_env):
    spec = PerturbationSpec("object_swap", 2, seed=0)
    envs = EnvCache(size=1)
    try:
        env = envs.get(ScenarioSpec("libero_spatial", 0, 0, perturbations=(spec,)))
        env.reset(0, (spec,))
        (realised,) = env.perturbations
        record = realised.realisation
        swapped, target = env.object_position(env.target_object), env.target_object
        spatial_env.reset(0, ())
        clean = spatial_env.object_position(spatial_env.target_object)
    finally:
        envs.close()
    assert target == spatial_env.target_object == "akita_black_bowl_1"
    assert record["category"] == "white_bowl" and record["kind"] == "bowl" and record["agentview_pixels"] > 50
    assert np.linalg.norm(swapped[:2] - clean[:2]) < 0.01  # the shipped init state put it where the black bowl was
