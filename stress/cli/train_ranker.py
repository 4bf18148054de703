"""``stress train-ranker``: counterfactual candidate data, the ranking value head on a reference checkpoint, and
its within-decision ranking AUROC on held-out init states against the checkpoint's own value
(docs/reference-model.md, "Ranking value head")."""

from __future__ import annotations

import json
import time
from pathlib import Path

from stress.cli.args import int_list_in, non_negative_int, positive_int
from stress.core.errors import UserError, choice_error
from stress.policies.reference.policy import checkpoint_path, load_checkpoint
from stress.training.ranking import (SCENES, cross_validated, evaluate_heads, generate_ranking_data, load_decisions, plan_rank_jobs, save_with_head,
                                     train_head)


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="reference checkpoint whose candidates are ranked (default: the shipped one)")
    parser.add_argument("--suite", default="libero_spatial", help="LIBERO suite (default libero_spatial)")
    parser.add_argument("--task", type=non_negative_int, default=0, help="task id (default 0)")
    parser.add_argument("--inits", type=int_list_in(0, 49), default="0-39", help="init states of the training data (default 0-39)")
    parser.add_argument("--eval-inits", type=int_list_in(0, 49), default="40-49", help="held-out init states of the evaluation data (default 40-49)")
    parser.add_argument("--scenes", default=",".join(SCENES), help=f"clean and/or physical families at severity 3, comma-separated (default {','.join(SCENES)})")
    parser.add_argument("--rollouts", type=positive_int, default=4, help="decisions per episode whose candidates are continued to the end (default 4)")
    parser.add_argument("--candidates", type=positive_int, default=8, help="best-of-N candidates per decision (default 8)")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="step budget of every episode (default: the suite's)")
    parser.add_argument("--budget-min", type=float, default=None, help="stop starting new episodes after this many minutes; 0 trains on the shards on disk (default: no limit)")
    parser.add_argument("--steps", type=positive_int, default=400, help="full-batch training steps of the head (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--data", type=Path, default=Path("results") / "data" / "ranking", help="resumable shards (default results/data/ranking)")
    parser.add_argument("--out", type=Path, default=Path("results") / "ranker" / "reference.pt", help="the checkpoint with the head (default results/ranker/reference.pt)")


def _span(inits) -> str:
    inits = sorted(inits)
    return f"{inits[0]}-{inits[-1]}" if inits == list(range(inits[0], inits[-1] + 1)) else ",".join(map(str, inits))


def run(args) -> int:
    scenes = [s for s in args.scenes.split(",") if s]
    for scene in scenes:
        if scene not in SCENES:
            raise choice_error("scene", scene, SCENES)
    if not scenes:
        raise UserError(f"--scenes is empty; valid: a comma-separated list of {', '.join(SCENES)}")
    if args.budget_min is not None and not args.budget_min >= 0:
        raise UserError(f"--budget-min {args.budget_min!r} invalid; valid: a number of minutes >= 0 (0: only the shards on disk)")
    if set(args.inits) & set(args.eval_inits):
        raise UserError(f"--inits and --eval-inits share init states {sorted(set(args.inits) & set(args.eval_inits))}; valid: disjoint lists")
    checkpoint = Path(args.checkpoint or checkpoint_path())
    load_checkpoint(checkpoint)  # a bad checkpoint fails here, with its one-line message
    tasks = [(args.suite, args.task)]
    train_jobs, eval_jobs = plan_rank_jobs(tasks, args.inits, scenes), plan_rank_jobs(tasks, args.eval_inits, scenes)
    # training and held-out episodes alternate by init state, so a budget cut leaves both sets
    per_init = len(scenes)
    jobs = [j for i in range(max(len(args.inits), len(args.eval_inits)))
            for j in train_jobs[i * per_init:(i + 1) * per_init] + eval_jobs[i * per_init:(i + 1) * per_init]]
    started = time.perf_counter()
    generate_ranking_data(jobs, args.data, checkpoint, args.rollouts, args.candidates, None if args.budget_min is None else args.budget_min * 60,
                          max_steps=args.max_steps, on_done=lambda job, arrays: print(f"init {job.init_index} {job.scene}: {len(arrays['steps'])} decisions, "
                                                            f"success {bool(arrays['success'])}, {float(arrays['wall_s']):.0f} s", flush=True))
    paths = lambda js: [p for p in (j.path(args.data, checkpoint, args.candidates, args.rollouts, args.max_steps) for j in js) if p.exists()]
    train, held_out = load_decisions(paths(train_jobs)), load_decisions(paths(eval_jobs))
    if not train:
        raise UserError(f"no measured training decisions under {args.data}; valid: a larger --budget-min or more --inits")
    head, manifest = train_head(train, steps=args.steps, seed=args.seed)
    figures = evaluate_heads(head, held_out, seed=args.seed) if held_out else {}
    folds = cross_validated(train + held_out, steps=args.steps, seed=args.seed)
    manifest.update({"checkpoint": str(checkpoint), "suite": args.suite, "task": args.task, "scenes": scenes, "rollouts": args.rollouts,
                     "candidates": args.candidates, "train_shards": len(paths(train_jobs)), "eval_shards": len(paths(eval_jobs)),
                     "held_out": figures, "leave_one_init_out": folds, "seconds": round(time.perf_counter() - started, 1)})
    out = save_with_head(checkpoint, head, manifest, args.out)
    print(f"trained on {manifest['decisions']} decisions ({manifest['pairs']} pairs with different outcomes, {manifest['candidates']} candidates)")
    for where, table in ((f"held-out inits {_span(args.eval_inits)}", figures), (f"leave one init out ({folds['folds']} inits)", folds)):
        for name in ("old", "head"):
            f = table.get(name)
            if f and f["auroc"] is not None:
                print(f"ranking AUROC, {where}, {name}: {f['auroc']:.3f} (95% {f['low']:.3f}-{f['high']:.3f}) over {f['pairs']} pairs "
                      f"in {f['decisions_with_pairs']} of {f['decisions']} decisions")
            elif name == "old":
                print(f"ranking AUROC, {where}: no decision has candidates with different outcomes")
                break
    print(f"checkpoint with the head: {out} (value_source=ranker; data, training and these figures in its ranker_manifest)")
    print(json.dumps({"held_out": figures, "leave_one_init_out": folds}, default=float))
    return 0
