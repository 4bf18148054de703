"""The ranking value head: trained on candidate features, stored in a format-2 checkpoint beside the untouched
network, used by planning under value_source="ranker"; the old checkpoint still loads; the data generator and
`stress train-ranker` end to end on a tiny real budget."""

import json

import numpy as np
import pytest
import torch

from stress.core.metrics import ranking_auroc
from stress.core.errors import UserError
from stress.policies.reference.policy import SHIPPED_CHECKPOINT, ReferencePolicy, load_checkpoint
from stress.training.ranking import RankJob, cross_validated, evaluate_heads, head_scores, load_decisions, save_with_head, train_head
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def observation(spatial_env):
    spatial_env.reset(3)
    return spatial_env.observe(render=True)


def _plan(policy, observation, seed, n=4):
    policy.reset(observation.instruction, seed, mode="planning", n_candidates=n)
    return policy.act(observation)


def test_head_trains_ships_beside_the_untouched_network_and_picks_the_candidate(observation, tmp_path):
    old = ReferencePolicy(record_features=True)
    plans = [_plan(old, observation, seed) for seed in range(6)]
    features = [p.info["ranker_features"] for p in plans]
    assert features[0].shape == (4, 384 + 112 + 64 + 9 + 2) and features[0].dtype == np.float32
    # the ensemble part of the features is the old score: its mean is the `average` aggregation
    np.testing.assert_allclose(features[0][:, -2], [c.predicted_value for c in plans[0].candidates], atol=1e-5)
    # a learnable outcome: the two candidates whose first actions move most along +x succeed
    top_two = lambda p: np.isin(np.arange(4), np.argsort([-c.actions[:4, 0].mean() for c in p.candidates], kind="stable")[:2])
    decisions = [{"features": f, "outcomes": top_two(p).astype(np.float32), "old_scores": np.array([c.predicted_value for c in p.candidates])}
                 for f, p in zip(features, plans)]
    head, manifest = train_head(decisions, steps=300, seed=0)
    assert manifest["pairs"] == 6 * 2 * 2 and manifest["candidates"] == 24
    fitted = evaluate_heads(head, decisions)
    assert fitted["head"]["auroc"] >= 0.9 and fitted["head"]["pairs"] == 24
    # leave one init state out: every decision scored by the head trained on the other init states' decisions only
    tagged = [{**d, "init": i % 3} for i, d in enumerate(decisions)]
    folds = cross_validated(tagged, steps=50)
    assert folds["folds"] == 3 and folds["head"]["pairs"] == folds["old"]["pairs"] == 24
    by_hand = []
    for init in range(3):
        fold_head, _ = train_head([d for d in tagged if d["init"] != init], steps=50)
        by_hand += [(s, d["outcomes"]) for s, d in zip(head_scores(fold_head, [d for d in tagged if d["init"] == init]), [d for d in tagged if d["init"] == init])]
    assert folds["head"]["auroc"] == ranking_auroc(by_hand) != fitted["head"]["auroc"]
    out = save_with_head(SHIPPED_CHECKPOINT, head, manifest, tmp_path / "ranker.pt")
    blob = torch.load(out, weights_only=True)
    assert blob["format"] == "stress-reference/2" and json.loads(blob["ranker_manifest"])["pairs"] == 24
    shipped = torch.load(SHIPPED_CHECKPOINT, weights_only=True)
    assert all(torch.equal(shipped["state_dict"][k], blob["state_dict"][k]) for k in shipped["state_dict"])  # bit for bit
    # the same network: direct decisions and the candidates are identical; under `ranker` the head picks
    ranked = ReferencePolicy(out, value_source="ranker")
    plan = _plan(ranked, observation, 3)
    for a, b in zip(plan.candidates, plans[3].candidates):
        np.testing.assert_array_equal(a.actions, b.actions)
    scores = head_scores(head, [decisions[3]])[0]
    np.testing.assert_allclose([c.predicted_value for c in plan.candidates], scores, atol=1e-5)
    assert plan.chosen == int(np.argmax(scores)) and plan.info["value_source"] == "ranker"
    for policy in (old, ranked):
        policy.reset(observation.instruction, 5)
    np.testing.assert_array_equal(old.act(observation).actions, ranked.act(observation).actions)
    # the other value sources still read the network's own ensemble from a format-2 checkpoint
    ranked.value_source = "future"
    np.testing.assert_allclose([c.predicted_value for c in _plan(ranked, observation, 3).candidates],
                               [c.predicted_value for c in plans[3].candidates], atol=1e-6)


def test_old_checkpoint_loads_and_ranker_needs_a_head(tmp_path):
    net, meta = load_checkpoint(SHIPPED_CHECKPOINT)
    assert torch.load(SHIPPED_CHECKPOINT, weights_only=True)["format"] == "stress-reference/1" and meta["ranker"] is None
    with pytest.raises(UserError, match="value_source 'ranker' needs a checkpoint with a ranking head; reference.pt has none"):
        ReferencePolicy(value_source="ranker")
    with pytest.raises(UserError, match="value_source 'bogus' unknown; valid: future, action, ranker"):
        ReferencePolicy(value_source="bogus")
    # through the CLI, before any episode: exit 2, one line, no traceback
    spec = {"suite": "libero_spatial", "task_id": 0, "init_index": 0, "policy": "reference", "mode": "planning", "n_candidates": 2,
            "policy_options": {"value_source": "ranker"}}
    for options, message in (({"value_source": "ranker"}, "needs a checkpoint with a ranking head"),
                             ({"value_source": "bogus"}, "value_source 'bogus' unknown; valid: future, action, ranker")):
        path = tmp_path / "spec.json"
        path.write_text(json.dumps([{**spec, "policy_options": options}]))
        proc = run_cli("run", "--scenario", str(path), "--out", str(tmp_path / "runs"))
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_train_ranker_end_to_end_on_a_tiny_real_budget(tmp_path):
    """Two real planning episodes (48 steps, best-of-2, one decision continued), the head trained and saved; a
    second call reuses the shards (resumable) and gives the same head; bad flags exit 2."""
    args = ["train-ranker", "--inits", "0", "--eval-inits", "1", "--scenes", "clean", "--candidates", "2", "--rollouts", "1",
            "--max-steps", "48", "--steps", "20", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "ranker.pt")]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "init 0 clean: 1 decisions" in first.stdout and "init 1 clean: 1 decisions" in first.stdout
    shards = sorted((tmp_path / "data").rglob("*.npz"))
    assert [p.name for p in shards] == ["init00_clean.npz", "init01_clean.npz"] and shards[0].parent.name == "libero_spatial_0_n2_k1_max48"
    (decision,) = load_decisions(shards[:1])
    assert decision["features"].shape == (2, 571) and set(decision["outcomes"]) <= {0.0, 1.0} and decision["step"] == 0
    head = load_checkpoint(tmp_path / "ranker.pt")[1]["ranker"]
    assert head is not None
    second = run_cli(*args)
    assert second.returncode == 0 and "decisions, success" not in second.stdout  # nothing generated again
    assert run_cli(*args, "--inits", "2", "--budget-min", "0").returncode == 2  # budget 0: no new shard, so nothing to train on
    again = load_checkpoint(tmp_path / "ranker.pt")[1]["ranker"]
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))  # seeded
    for bad, message in ((["--scenes", "lighting"], "unknown scene 'lighting'; valid: clean, object_pose, dynamics, mid_chunk_push"),
                         (["--eval-inits", "0"], "--inits and --eval-inits share init states [0]"),
                         (["--budget-min", "-1"], "--budget-min -1.0 invalid")):
        proc = run_cli(*args, *bad)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_rank_jobs_are_seeded_and_named_by_their_settings(tmp_path):
    job = RankJob("libero_spatial", 0, 3, "dynamics")
    assert job.seed == RankJob("libero_spatial", 0, 3, "dynamics").seed != RankJob("libero_spatial", 0, 3, "clean").seed
    spec = job.spec(SHIPPED_CHECKPOINT, 8)
    assert spec.mode == "planning" and spec.perturbations[0].name == "dynamics" and spec.perturbations[0].severity == 3
    assert dict(spec.policy_options)["record_features"] is True
    assert job.path(tmp_path, SHIPPED_CHECKPOINT) != job.path(tmp_path, SHIPPED_CHECKPOINT, 4)
