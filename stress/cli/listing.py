"""``stress list WHAT``: the perturbations (and each one's parameter space), policies, suites, properties, samplers
or protocols."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from perturbations.base import registry
from scenarios.properties import properties
from scenarios.protocols import PROTOCOLS
from scenarios.samplers import SAMPLERS
from stress.cli.common import console
from stress.core.errors import UserError
from stress.envs import simulator, simulator_names, simulators_supporting
from stress.policies import policy_class, policy_names


def add_arguments(parser) -> None:
    parser.add_argument("what", help="perturbations, policies, suites, properties, samplers or protocols")


def run(args) -> int:
    out = console()
    if args.what == "perturbations":
        table = Table(title="perturbations (--perturb NAME[:LEVEL], levels 0-5, 0 = identity)")
        for column in ("name", "layer", "simulators", "cameras", "what it does", "severity 1-5"):
            table.add_column(column)
        for name, cls in registry().items():
            cells = (name, cls.layer.value, ", ".join(simulators_supporting(cls)), "one camera or both (all)" if cls.per_camera else "—", cls.summary, cls.severity_meaning)
            table.add_row(*(escape(c) for c in cells))  # '[dx, dy]' is not rich markup
        out.print(table)
        # each family's declared parameter space: explicit "params" of a scenario, and the search grid
        # (grid index i = identity (or default) + i * step; index 0 is the identity)
        for name, cls in registry().items():
            params = Table(title=f"{name} parameters", title_justify="left")
            for column in ("parameter", "kind", "range", "unit", "identity", "default", "search grid"):
                params.add_column(column, no_wrap=True)
            params.add_column("meaning")
            for row in cls.space.rows():
                cells = (row["name"], row["kind"], row["range"], row["unit"], row["identity"], row["default"], row["grid"], row["meaning"])
                params.add_row(*(escape(c) for c in cells))
            out.print(params)
    elif args.what == "policies":
        table = Table(title="policies (--policy NAME)")
        for column in ("name", "modes", "uses images", "description"):
            table.add_column(column)
        for name in policy_names():
            cls = policy_class(name)
            table.add_row(name, ", ".join(cls.modes), str(cls.uses_images), (cls.__doc__ or "").strip().splitlines()[0])
        out.print(table)
    elif args.what == "suites":
        for name in simulator_names():
            sim = simulator(name)
            out.print(f"[bold underline]{name}[/bold underline]: {sim.note}; cameras {', '.join(sim.cameras)}; {sim.action_dim}-D actions")
            for suite, max_steps in sim.suites.items():
                tasks = sim.tasks(suite)
                out.print(f"[bold]{suite}[/bold]: {len(tasks)} tasks, {max_steps} max steps")
                for i, text in enumerate(tasks):
                    out.print(f"  {i:2d}  {text} ({sim.n_init_states(suite, i)} init states)")
    elif args.what == "properties":
        table = Table(title="properties (stress search --property NAME)")
        for column in ("name", "episodes per scenario", "needs", "violated when"):
            table.add_column(column)
        for name, prop in properties().items():
            table.add_row(name, ", ".join(prop.variants), ", ".join(prop.requires) or "—", prop.doc)
        out.print(table)
    elif args.what == "protocols":
        table = Table(title="protocols (stress run --protocol NAME; docs/protocols.md)")
        for column in ("name", "suites: step limit, paper %", "trials x seeds", "image, settle", "mode, policy options", "verdict", "what"):
            table.add_column(column)
        for p in PROTOCOLS.values():
            table.add_row(p.name, "\n".join(f"{s}: {p.step_limit(s)}, {p.paper_figure(s):.1f}" for s in p.suites) + f"\naverage {p.paper_average:.1f}",
                          f"{p.trials} x {', '.join(map(str, p.seeds))}", f"{p.image_size} px, {p.settle_steps} steps",
                          f"{p.mode}, " + (", ".join(f"{k}={v}" for k, v in p.policy_options) or "none"), f"average within ±{p.tolerance:.1f} points", p.summary)
        out.print(table)
    elif args.what == "samplers":
        out.print("samplers (stress search --sampler NAME): " + ", ".join(SAMPLERS))
    else:
        raise UserError(f"unknown list {args.what!r}; valid: perturbations, policies, suites, properties, samplers, protocols")
    return 0

