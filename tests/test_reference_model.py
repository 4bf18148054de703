"""The reference model: the contract every model-backed policy honours, bad checkpoints and inputs,
a tiny real training run, and the shipped checkpoint solving a known init state."""

import json

import numpy as np
import pytest
import torch

from stress.core.spec import ScenarioSpec
from stress.core.errors import UserError
from stress.policies import policy_class, policy_names
from stress.policies.reference.policy import UNSEEN_WARNING
from stress.core.policy import Observation
from stress.training.data import PERTURBED_FAMILIES
from tests.conftest import run_cli

# in-process model backends; the clients of a server serve whichever model it holds: their contract is that they
# give the served model's episodes bit for bit (tests/test_remote_policy.py, tests/test_cosmos_deploy.py)
MODEL_BACKED = [n for n in policy_names() if "planning" in policy_class(n).modes and n not in ("remote", "cosmos-deploy")]


@pytest.fixture(scope="module")
def observation(spatial_env):
    spatial_env.reset(3)
    return spatial_env.observe(render=True)


@pytest.fixture(scope="module", params=MODEL_BACKED)
def policy(request):
    return policy_class(request.param)()


def test_direct_decision_contract(policy, observation):
    policy.reset(observation.instruction, 7)
    d = policy.act(observation)
    assert d.actions.shape == (16, 7) and np.all(np.abs(d.actions) <= 1.0)
    assert 0.0 <= d.predicted_value <= 1.0
    for camera in ("agentview", "wrist"):
        image = d.predicted_future[camera]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert len(d.info["predicted_proprio"]) == 9


def test_same_seed_same_decision_other_seed_other_actions(policy, observation):
    decisions = []
    for seed in (7, 7, 8):
        policy.reset(observation.instruction, seed)
        decisions.append(policy.act(observation))
    a, b, c = decisions
    np.testing.assert_array_equal(a.actions, b.actions)
    assert a.predicted_value == b.predicted_value
    np.testing.assert_array_equal(a.predicted_future["agentview"], b.predicted_future["agentview"])
    assert not np.allclose(a.actions, c.actions)


def test_planning_candidates_and_roles_are_consistent(policy, observation):
    policy.reset(observation.instruction, 7)
    direct = policy.act(observation)
    policy.reset(observation.instruction, 7, mode="planning", n_candidates=4, aggregation="lcb")
    plan = policy.act(observation)
    assert len(plan.candidates) == 4 and plan.aggregation == "lcb"
    # candidate i uses seed + i: candidate 0 is the direct policy's own sample (up to batched float rounding)
    np.testing.assert_allclose(plan.candidates[0].actions, direct.actions, atol=1e-5)
    assert [c.seed for c in plan.candidates] == [plan.candidates[0].seed + i for i in range(4)]
    assert not np.allclose(plan.candidates[0].actions, plan.candidates[1].actions)
    # the executed chunk is the candidate with the best aggregated ensemble (3 futures x 5 values)
    values = np.array(plan.info["candidate_values"])
    assert values.shape == (4, 15) and np.all((values >= 0) & (values <= 1))
    scores = np.clip(values.mean(1) - values.std(1, ddof=1), 0, 1)  # Cosmos's lcb: unbiased std, clamped
    assert plan.chosen == int(np.argmax([c.predicted_value for c in plan.candidates]))
    np.testing.assert_allclose([c.predicted_value for c in plan.candidates], scores, atol=1e-3)
    np.testing.assert_array_equal(plan.actions, plan.candidates[plan.chosen].actions)
    # the raw ensemble behind each score travels with its candidate (the remote protocol sends it)
    np.testing.assert_allclose(np.array([c.ensemble_values for c in plan.candidates]), values, atol=1e-4)
    # the candidates of best-of-2 are the first two of best-of-4
    policy.reset(observation.instruction, 7, mode="planning", n_candidates=2, aggregation="lcb")
    small = policy.act(observation)
    np.testing.assert_allclose(np.array(small.info["candidate_values"]), values[:2], atol=1e-3)


def test_q_variant_values_from_actions_alone(policy, observation):
    policy.value_source = "action"
    try:
        policy.reset(observation.instruction, 7, mode="planning", n_candidates=2)
        plan = policy.act(observation)
    finally:
        policy.value_source = "future"
    assert plan.info["value_source"] == "action"
    assert all(0.0 <= c.predicted_value <= 1.0 for c in plan.candidates)


@pytest.mark.parametrize("steps", [1, 5, 10])
def test_denoising_steps_knob(policy, observation, steps):
    policy.num_denoising_steps = steps
    try:
        policy.reset(observation.instruction, 7)
        d = policy.act(observation)
    finally:
        policy.num_denoising_steps = 5
    assert d.info["denoising_steps"] == steps and d.actions.shape == (16, 7)


def test_policy_noise_reaches_the_models_knobs():
    """The policy_noise family changes the real denoising steps and precision, and puts them back."""
    from stress.core.spec import PerturbationSpec
    from stress.envs.cache import EnvCache
    from stress.policies.cache import PolicyCache
    from stress.runners.episode import run_episode

    noise = PerturbationSpec("policy_noise", 1, params={"denoising_steps_scale": 0.5, "precision": "bfloat16"})
    envs, policies = EnvCache(), PolicyCache()
    try:
        result = run_episode(ScenarioSpec("libero_spatial", 0, 0, perturbations=(noise,), policy="reference", max_steps=16), envs, policies)
    finally:
        envs.close()
    assert result.error is None
    knobs = result.perturbations[0]["realisation"]["knobs"]
    assert knobs["denoising_steps_scale"] == {"applied": True, "attribute": "num_denoising_steps", "from": 5, "to": 2}
    assert knobs["precision"]["applied"] and knobs["precision"]["to"] == "bfloat16"
    policy = policies.get("reference")
    assert policy.num_denoising_steps == 5 and policy.precision == "float32"  # restored for the next episode


def test_bad_images_are_clear_errors(policy, observation):
    policy.reset(observation.instruction, 0)
    wrong_dtype = Observation({**observation.images, "wrist": observation.images["wrist"].astype(np.float32)}, observation.proprio, observation.instruction, 0)
    with pytest.raises(UserError, match="wrist image must be a uint8 array; got float32"):
        policy.act(wrong_dtype)
    wrong_shape = Observation({**observation.images, "agentview": observation.images["agentview"][..., 0]}, observation.proprio, observation.instruction, 0)
    with pytest.raises(UserError, match=r"agentview image must be HxWx3.*\(128, 128\)"):
        policy.act(wrong_shape)
    missing = Observation({"agentview": observation.images["agentview"]}, observation.proprio, observation.instruction, 0)
    with pytest.raises(UserError, match="needs a 'wrist' image"):
        policy.act(missing)


def test_unknown_instruction_warns_once_per_process_and_still_runs(observation, capsys, monkeypatch):
    monkeypatch.setitem(UNSEEN_WARNING, "given", False)
    policy = policy_class("reference")()
    policy.reset("stack the red cube on the green cube", 0)
    assert "not trained on the instruction 'stack the red cube on the green cube'" in capsys.readouterr().err
    d = policy.act(Observation(observation.images, observation.proprio, "stack the red cube on the green cube", 0))
    assert d.actions.shape == (16, 7)
    # a language perturbation tells each episode another instruction, to other policy objects too: one line in all
    policy.reset("grab the black dish", 1)
    policy_class("reference")().reset("stack the red cube on the green cube", 1)
    assert "not trained" not in capsys.readouterr().err


def test_bad_checkpoints_fail_with_one_line(tmp_path):
    from stress.policies.reference.policy import SHIPPED_CHECKPOINT, CheckpointError, ReferencePolicy

    with pytest.raises(CheckpointError, match="not found"):
        ReferencePolicy(tmp_path / "none.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(SHIPPED_CHECKPOINT.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt"):
        ReferencePolicy(corrupt)
    blob = torch.load(SHIPPED_CHECKPOINT, weights_only=True)
    blob["architecture"]["width"] = 128  # another architecture
    other = tmp_path / "other.pt"
    torch.save(blob, other)
    with pytest.raises(CheckpointError, match="does not match this code's architecture"):
        ReferencePolicy(other)
    blob["format"] = "someone-else/3"
    torch.save(blob, other)
    with pytest.raises(CheckpointError, match="'someone-else/3'; valid: 'stress-reference/1'"):
        ReferencePolicy(other)
    # through the CLI: exit 2, one line, no traceback
    proc = run_cli("evaluate-reference", "--checkpoint", str(corrupt))
    assert proc.returncode == 2 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_shipped_checkpoint_is_small_and_weights_only():
    from stress.policies.reference.policy import SHIPPED_CHECKPOINT

    assert SHIPPED_CHECKPOINT.stat().st_size <= 25e6
    blob = torch.load(SHIPPED_CHECKPOINT, weights_only=True)  # plain tensors and strings: nothing unpickled
    manifest = json.loads(blob["manifest"])
    assert manifest["data"]["episodes"] > 0 and manifest["config"]["steps"] > 0
    assert {tuple(t)[0] for t in manifest["config"]["tasks"]} == {"libero_spatial", "libero_object"}


def test_shipped_checkpoint_solves_a_known_init_state():
    from stress.envs.cache import EnvCache
    from stress.policies.cache import PolicyCache
    from stress.runners.episode import run_episode

    envs = EnvCache()
    try:
        result = run_episode(ScenarioSpec("libero_spatial", 0, SOLVED_INIT, policy="reference", seed=0), envs, PolicyCache())
    finally:
        envs.close()
    assert result.error is None and result.success
    assert len(result.decisions) == len(result.decision_steps)  # one value row per decision


def test_tiny_training_run_end_to_end(tmp_path):
    """Real data from a real LIBERO task, a few optimiser steps, a DAgger round on the model's own rollouts,
    a loadable checkpoint; then resume."""
    from stress.training.build import train_reference
    from stress.policies.reference.policy import ReferencePolicy

    kwargs = dict(data_root=tmp_path / "data", tasks=(("libero_object", 1),), inits=(0, 9), variants=("demo", "sabotage"))
    checkpoint = train_reference(tmp_path / "out", steps=3, own_steps=2, decoder_steps=2, **kwargs)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # the decoder stage changed the future decoder only: actions and values are exactly the last round's
    final = torch.load(checkpoint, weights_only=True)["state_dict"]
    last_round = torch.load(tmp_path / "out" / "round2" / "reference.pt", weights_only=True)["state_dict"]
    changed = {k for k in final if not torch.equal(final[k], last_round[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)
    errors = manifest["losses"]["decoder_stage"]["validation"]
    assert set(errors) == {"before", "after"} and {"agentview", "wrist_copy_frame", "agentview_ssim", "wrist_copy_frame_ssim"} <= set(errors["after"])
    assert manifest["data"]["train_episodes"] == 3 and manifest["data"]["validation_episodes"] == 3  # init 9 is held out
    assert set(manifest["data"]["success_rate_by_variant"]) == {"demo", "sabotage", "policy"}
    assert len(manifest["losses"]["curve"]) == 2 and set(manifest["losses"]["validation"]) >= {"actions", "value", "recon"}
    own = sorted(p.name for p in (tmp_path / "data").glob("*/*_policy-*.npz"))  # named after the driving checkpoint
    assert len(own) == 2 and len(list((tmp_path / "data").glob("*/*.npz"))) == 6
    with np.load(next((tmp_path / "data").glob("*/init00_policy-*.npz"))) as shard:
        assert shard["label_valid"].all() and not np.allclose(shard["executed_actions"], shard["label_actions"])  # the model acted, the expert labelled
    policy = ReferencePolicy(checkpoint)
    policy.reset("pick up the cream cheese and place it in the basket", 0)
    rng = np.random.default_rng(0)
    obs = Observation({c: rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for c in ("agentview", "wrist")}, np.zeros(9, np.float32), "", 0)
    assert policy.act(obs).actions.shape == (16, 7)
    # only the second round changed (here: dropped): the finished first round is reused, not retrained
    stages = []
    train_reference(tmp_path / "out", steps=3, own_steps=0, progress=lambda stage, done, total: stages.append(stage), **kwargs)
    assert "train" not in stages and "policy" not in json.loads((tmp_path / "out" / "manifest.json").read_text())["data"]["success_rate_by_variant"]
    # a second DAgger round: rounds 1 and 2 (and round 1's rollouts) are reused, the round-2 model drives new rollouts
    stages = []
    train_reference(tmp_path / "out", steps=3, own_steps=2, own_rounds=2, progress=lambda stage, done, total: stages.append(stage), **kwargs)
    assert "train" not in stages and stages.count("fine-tune") == 2  # only round 3 trains (2 steps)
    assert len(list((tmp_path / "data").glob("*/*_policy-*.npz"))) == 4
    assert set(json.loads((tmp_path / "out" / "manifest.json").read_text())["data"]["own_rollout_success"]) == {"round1", "round2"}
    assert (tmp_path / "out" / "round3" / "train_state.pt").exists()
    # a round on perturbed scenes after them: only it trains; the round-3 model drives, the expert labels
    stages = []
    train_reference(tmp_path / "out", steps=3, own_steps=2, own_rounds=2, perturbed_rounds=1,
                    progress=lambda stage, done, total: stages.append(stage), **kwargs)
    assert "train" not in stages and "perturbed rollouts" in stages and stages.count("fine-tune") == 2
    perturbed = sorted((tmp_path / "data").glob("*/*_perturbed-*.npz"))
    assert len(perturbed) == 2 and (tmp_path / "out" / "round4" / "train_state.pt").exists()
    records = {}
    for path in perturbed:
        with np.load(path) as shard:
            record = json.loads(str(shard["perturbation"]))
            assert record["name"] in PERTURBED_FAMILIES and 1 <= record["severity"] <= 5 and shard["label_valid"].all()
            records[path.name.split("_")[0]] = record
    # init 0 draws a push at a step of the third chunk: it fires, as the generator marks every query like the runner
    assert records["init00"]["name"] == "mid_chunk_push" and records["init00"]["params"]["trigger"] == "chunk_step"
    assert records["init00"]["realisation"]["status"] == "fired"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "round3_perturbed" in manifest["data"]["own_rollout_success"] and manifest["config"]["perturbed_rounds"] == 1
    for extra in list((tmp_path / "data").glob("*/*_policy-*.npz")) + perturbed:
        if extra.name not in own:
            extra.unlink()  # the checks below count the shards of the first call
    # an interrupted training resumes from its last saved state (data shards are reused, not regenerated)
    stamps = {p: p.stat().st_mtime for p in (tmp_path / "data").glob("*/*.npz")}
    out = tmp_path / "interrupted"

    def interrupt(stage, done, total):
        if stage == "train" and done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_reference(out, steps=4, save_every=2, progress=interrupt, **kwargs)
    assert int(torch.load(out / "round1" / "train_state.pt", weights_only=True)["step"]) == 2
    seen = []
    train_reference(out, steps=4, save_every=2, progress=lambda stage, done, total: seen.append((stage, done)), **kwargs)
    assert [d for stage, d in seen if stage == "train"] == [3, 4]  # continued from step 2, not from 0
    assert {p: p.stat().st_mtime for p in (tmp_path / "data").glob("*/*.npz")} == stamps


def test_perturbed_rollouts_draw_a_physical_perturbation_per_episode():
    """The ``perturbed`` variant's scene: seeded by the job, severity 1-5, only the physical families."""
    from stress.training.data import PERTURBED, SCENE_SEEDS, Job, scene_perturbation

    jobs = [Job("libero_spatial", 0, init, PERTURBED, "x.pt") for init in range(40)]
    specs = [scene_perturbation(job) for job in jobs]
    assert specs == [scene_perturbation(job) for job in jobs]  # deterministic
    assert {s.name for s in specs} == set(PERTURBED_FAMILIES) and {s.severity for s in specs} <= set(range(1, 6))
    assert len({s.seed for s in specs}) == len(specs) and scene_perturbation(jobs[0], 1).seed != specs[0].seed
    assert scene_perturbation(jobs[0], SCENE_SEEDS).name != specs[0].name  # an invalid family moves on to the next


SOLVED_INIT = 40  # a held-out init state the shipped checkpoint solves (seed 0; docs/reference-model.md)


def test_the_decoder_stage_trains_on_the_ssim_the_evaluation_reports():
    """The decoder stage's differentiable SSIM is the metric's (same window and constants; borders may differ a hair)."""
    from stress.core.metrics import ssim
    from stress.training.train import gaussian_ssim, to_tensor_images

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    noisy = np.clip(image.astype(int) + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
    for other in (image, noisy, np.zeros_like(image)):
        torch_value = float(gaussian_ssim(to_tensor_images(image)[None], to_tensor_images(other)[None]))
        assert torch_value == pytest.approx(ssim(image, other), abs=2e-3)


def test_evaluation_draws_independent_noise_per_scenario_paired_across_modes():
    """One seed shared by every episode made outcomes move together (docs/reference-model.md, "Seeds")."""
    from stress.training.evaluate import evaluation_specs

    tasks = [("libero_spatial", 0), ("libero_object", 1)]
    specs = evaluation_specs(tasks, range(5), ("direct", "planning"), 8, "average", seed=0)
    seeds = {(s.suite, s.task_id, s.init_index, s.mode): s.seed for s in specs}
    direct = {k[:3]: v for k, v in seeds.items() if k[3] == "direct"}
    assert len(set(direct.values())) == len(direct) == 10  # every task and init state its own noise
    assert all(seeds[(*k, "planning")] == v for k, v in direct.items())  # both modes of a scenario: the same noise
    assert all(0 <= v < 10**6 for v in direct.values())  # x 1000 + decision stays within torch's 32-bit seeds
    again = evaluation_specs(tasks, range(5), ("direct",), 8, "average", seed=0)
    assert [s.seed for s in again] == [direct[(s.suite, s.task_id, s.init_index)] for s in again]
    other = evaluation_specs(tasks, range(5), ("direct",), 8, "average", seed=1)
    assert not set(s.seed for s in other) & set(direct.values())


def test_temperature_scales_the_policy_noise_not_the_ensembles(observation):
    from stress.policies.reference.policy import DEFAULT_TEMPERATURE, ReferencePolicy

    policy = ReferencePolicy(temperature=0.0)
    chunks = []
    for seed in (7, 8):
        policy.reset(observation.instruction, seed)
        chunks.append(policy.act(observation).actions)
    np.testing.assert_array_equal(chunks[0], chunks[1])  # no noise: every seed samples the same chunk
    policy.reset(observation.instruction, 7, mode="planning", n_candidates=3)
    plan = policy.act(observation)
    for c in plan.candidates:  # all the same chunk (up to batched float rounding)
        np.testing.assert_allclose(c.actions, chunks[0], atol=1e-5)
    assert len(np.unique(plan.info["candidate_values"])) > 1  # world-model and value ensembles still sample
    for temperature in (DEFAULT_TEMPERATURE, 1.0):
        policy.temperature = temperature
        policy.reset(observation.instruction, 7)
        assert not np.allclose(policy.act(observation).actions, chunks[0])
    for bad in (-0.5, "hot", 3):
        policy.temperature = bad
        with pytest.raises(UserError, match=f"temperature {bad!r} invalid; valid: a number from 0 to 2"):
            policy.act(observation)
