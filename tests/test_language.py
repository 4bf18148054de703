"""The language family: deterministic, recorded rewrites; meaning-preserving levels keep the task's objects; the
swap names another task of the same scene; the rewritten instruction reaches the policy and is stored."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from perturbations.base import parameters_for, validate
from perturbations.language import OBJECTS, InstructedPolicy, canonical, in_scene, mentioned_objects, rewrite
from stress.core.errors import NotRealised, UserError
from stress.core.policy import Decision, Observation
from stress.core.spec import PerturbationSpec, ScenarioSpec
from stress.envs.libero import _benchmark, same_scene_tasks, scene_name, suite_tasks
from stress.envs.libero_setup import import_libero
from stress.envs.cache import EnvCache
from stress.policies.cache import PolicyCache
from stress.policies.reference.text import embedding_distance, instruction_embeddings
from stress.report.gallery import _records
from stress.report.language import language_sensitivity
from stress.runners.episode import run_episode

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
MEANING_KEPT = (1, 2, 3)


def bddl_objects(suite: str, task_id: int) -> list[str]:
    """The objects and fixtures a task's BDDL declares (what the env's ``object_bodies`` holds)."""
    task = _benchmark(suite).get_task(task_id)
    text = (Path(import_libero().get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file).read_text()
    names = []
    for block in re.findall(r"\(:(?:objects|fixtures)(.*?)\)", text, re.S):
        names += re.findall(r"(\S+)\s+-\s+\S+", block)
    return names


def params(level: int, seed: int = 0) -> dict:
    return parameters_for(PerturbationSpec("language", level, seed=seed))


def test_rewrites_are_deterministic_per_level_and_seed_and_recorded():
    original = suite_tasks("libero_spatial")[0]
    others, objects = same_scene_tasks("libero_spatial", 0), bddl_objects("libero_spatial", 0)
    for level in range(1, 6):
        first = rewrite(original, params(level, 3), others, objects, objects)
        assert first == rewrite(original, params(level, 3), others, objects, objects)
        assert first["original"] == original and first["instruction"] != original
        assert first["edit_distance"] > 0 and 0 < first["word_distance"] <= 1
        assert first["grounding"] == (level >= 4)
        json.dumps(first)  # stored with the episode
    texts = {rewrite(original, params(2, seed), others, objects, objects)["instruction"] for seed in range(6)}
    assert len(texts) > 1  # the seed picks the synonyms, frames and typos


@pytest.mark.parametrize("suite", SUITES)
def test_meaning_preserving_levels_keep_the_task_objects(suite):
    for task_id, original in enumerate(suite_tasks(suite)):
        objects = bddl_objects(suite, task_id)
        assert in_scene(original, objects), (suite, task_id)
        for level in MEANING_KEPT:
            for seed in range(4):
                record = rewrite(original, params(level, seed), (), objects, objects)
                assert sorted(mentioned_objects(record["main"])) == sorted(mentioned_objects(original)), (suite, task_id, level, record["main"])
                assert in_scene(record["main"], objects)
                for obj in record.get("distractors", []):  # a distractor names another object of the scene, never a task's
                    assert obj in objects and not set(mentioned_objects(obj.replace("_", " "))) & set(mentioned_objects(original))


def test_synonym_tables_are_unambiguous():
    alternatives = [alt for alts in OBJECTS.values() for alt in alts]
    assert len(alternatives) == len(set(alternatives)) and not set(alternatives) & set(OBJECTS)
    assert canonical("grab the black dish and set it on the platter") == "grab the black bowl and set it on the plate"


@pytest.mark.parametrize("suite", SUITES)
def test_the_swap_names_another_task_of_the_same_scene(suite):
    tasks = suite_tasks(suite)
    for task_id, original in enumerate(tasks):
        others = same_scene_tasks(suite, task_id)
        try:
            record = rewrite(original, params(4, task_id), others, bddl_objects(suite, task_id))
        except NotRealised as exc:
            assert "no other task of this scene" in str(exc)
            assert suite in ("libero_10", "libero_90")  # scenes of one task: the swap is a not_realised row
            continue
        other = record["other_task_id"]
        assert other != task_id and record["instruction"] == tasks[other] != original
        assert scene_name(suite, other) == scene_name(suite, task_id)
    assert same_scene_tasks("libero_10", 2) == ()  # KITCHEN_SCENE3: one task
    assert {t for t, _ in same_scene_tasks("libero_10", 0)} == {1}  # LIVING_ROOM_SCENE2
    assert len(same_scene_tasks("libero_goal", 0)) == 9


def test_level_one_without_a_table_entry_is_not_realised():
    with pytest.raises(NotRealised, match="no table entry"):
        rewrite("wave at the camera", {"rewrite": "synonyms", "text_seed": 0})


def test_bad_explicit_parameters_are_one_line_user_errors():
    with pytest.raises(UserError, match="language replace 'empty' takes no rewrite; valid:"):
        validate(PerturbationSpec("language", 1, params={"replace": "empty", "rewrite": "synonyms"}))
    with pytest.raises(UserError, match="language rewrite 'shout' unknown; valid: none, synonyms, paraphrase"):
        validate(PerturbationSpec("language", 1, params={"rewrite": "shout"}))


class Recorder:
    """The policy protocol, recording what it is told."""

    name, modes, uses_images = "recorder", ("direct",), False

    def __init__(self):
        self.told = []

    def reset(self, instruction, seed, **planning):
        self.told.append(("reset", instruction))

    def act(self, obs):
        self.told.append(("act", obs.instruction))
        return Decision(actions=np.zeros((1, 7)))


def test_the_policy_is_told_the_rewritten_instruction():
    inner = Recorder()
    policy = InstructedPolicy(inner, "grab the black dish")
    policy.reset("pick up the black bowl", 0, mode="direct")
    policy.act(Observation({}, np.zeros(9), "pick up the black bowl", 0))
    assert inner.told == [("reset", "grab the black dish"), ("act", "grab the black dish")]
    policy.num_denoising_steps = 3  # a backend knob set through the wrapper (policy_noise wraps after it)
    assert inner.num_denoising_steps == 3 and policy.name == "recorder"


def test_episode_stores_the_instruction_and_the_gallery_card_shows_it():
    envs = EnvCache(size=1)
    try:
        spec = ScenarioSpec(suite="libero_spatial", task_id=0, init_index=0, max_steps=4, policy="expert",
                            perturbations=(PerturbationSpec("language", 4, seed=1),))
        result = run_episode(spec, envs, PolicyCache())
    finally:
        envs.close()
    assert result.error is None
    record = result.perturbations[0]
    assert record["realisation"]["grounding"] and record["realisation"]["instruction"] in suite_tasks("libero_spatial")[1:]
    card = _records({"perturbations": json.dumps(result.perturbations)})[0]
    assert card["instruction"] == {"told": record["realisation"]["instruction"], "original": suite_tasks("libero_spatial")[0], "grounding": True}


def test_language_sensitivity_pairs_each_level_with_the_clean_episode_at_the_same_state():
    def episode(key, init, label, success, record=None):
        perturbations = [] if record is None else [{"name": "language", "severity": 4, "realisation": record}]
        return {"episode_key": key, "suite": "libero_spatial", "task_id": 0, "init_index": init, "seed": 0, "policy": "reference",
                "setting": "direct", "perturbation": label, "severity": 0 if record is None else 4, "success": success,
                "perturbations": json.dumps(perturbations)}

    swap = {"kind": "grounding", "instruction": "pick up the black bowl next to the ramekin and place it on the plate",
            "original": suite_tasks("libero_spatial")[0], "normalised_edit_distance": 0.3, "word_distance": 0.2}
    episodes = [episode("c0", 0, "clean", True), episode("c1", 1, "clean", True), episode("c2", 2, "clean", False),
                episode("l0", 0, "language:4", False, swap), episode("l1", 1, "language:4", True, swap), episode("l2", 2, "language:4", False, swap)]
    decisions = [{"episode_key": k, "step": s, "candidate": -1, "pred_value": v}
                 for k, s, v in (("c0", 0, 0.8), ("l0", 0, 0.5), ("c1", 0, 0.6), ("l1", 0, 0.7), ("l1", 16, 0.1))]
    stored = {"c0": 10, "l0": 14, "c1": 10}  # first predicted future: a flat image of this grey level

    def frames(key):
        if key not in stored:
            return None
        return {"steps": np.array([0, 16]), "predicted": np.full((2, 4, 4, 3), stored[key], np.uint8)}

    (row,) = language_sensitivity(episodes, decisions, frames)
    assert (row["kind"], row["episodes"], row["pairs"], row["clean_ok_pairs"]) == ("grounding", 3, 3, 2)
    assert row["breaks"] == 0.5 and row["success"] == pytest.approx(1 / 3) and row["clean_success"] == pytest.approx(2 / 3)
    assert row["value_shift"] == pytest.approx(0.2) and row["value_pairs"] == 2  # |0.5-0.8| and |0.7-0.6|, at step 0 only
    assert row["future_shift"] == 4.0 and row["future_pairs"] == 1  # l1 stored no frames
    assert row["example"].startswith('"pick up the black bowl next to')
    assert row["embedding_distance"] == embedding_distance(swap["original"], swap["instruction"]) > 0


def test_embedding_distance_is_the_reference_models_own_instruction_encoder():
    """The embeddings read from the checkpoint without the network are the ones the network conditions on."""
    import torch

    from stress.policies.reference.model import text_batch
    from stress.policies.reference.policy import SHIPPED_CHECKPOINT, load_checkpoint

    net, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    texts = [suite_tasks("libero_spatial")[0], "put the black bowl on the plate please", ""]
    with torch.no_grad():
        assert np.allclose(net.text(*text_batch(texts)).numpy(), instruction_embeddings(texts), atol=1e-6)
    same, near, other = (embedding_distance(texts[0], t) for t in (texts[0], texts[1], suite_tasks("libero_spatial")[5]))
    assert same == 0.0 and 0 < near and 0 < other <= 2
    assert embedding_distance(texts[0], texts[1], checkpoint=Path("/nonexistent.pt")) is None  # no encoder at hand: no figure


def test_stress_show_and_the_gallery_show_the_language_levels(tmp_path):
    """A short expert run with a swap level: `stress show` prints the language-sensitivity table, the gallery has it
    and its card shows the instruction told next to the task's."""
    from tests.conftest import run_cli

    proc = run_cli("run", "--policy", "expert", "--perturb", "language:4", "--episodes", "1", "--max-steps", "8", "--workers", "1",
                   "--out", str(tmp_path / "runs"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = next((tmp_path / "runs").iterdir())
    show = run_cli("show", str(run), timeout=300)
    assert show.returncode == 0 and "language sensitivity" in show.stdout and "grounding" in show.stdout and "embed dist" in show.stdout, show.stdout
    gallery = run_cli("gallery", str(run), "--max-cards", "1", "--out", str(tmp_path / "gallery"), timeout=600)
    assert gallery.returncode == 0, gallery.stderr
    html = (tmp_path / "gallery" / "index.html").read_text()
    assert "Language sensitivity" in html and "embedding dist (reference encoder)" in html and '<th>told</th><td class="instruction"><q>pick up the black bowl' in html
    assert "grounding: the outcome should change" in html
