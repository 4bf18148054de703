"""``stress serve``: serve a policy over a websocket (docs/remote-policy.md) for ``stress run --policy remote``."""

from __future__ import annotations

import sys

from stress.cli.args import DEFAULT_POLICY, int_in, non_negative_int
from stress.core.errors import UserError, choice_error
from stress.core.policy import Observation
from stress.policies import policy_class, policy_names
from stress.policies.cosmos_server import add_arguments as add_cosmos_arguments
from stress.policies.cosmos_server import given_flags, make_server
from stress.policies.serve import PolicyServer


def add_arguments(serve) -> None:
    serve.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy to serve: reference, or cosmos in Cosmos Policy's environment (default {DEFAULT_POLICY})")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only: the protocol has no authentication)")
    serve.add_argument("--port", type=int_in(0, 65535), default=8765, help="port (default 8765; 0 picks a free one, printed on start)")
    serve.add_argument("--threads", type=non_negative_int, default=0, help="torch threads of the served model (default 0: torch's own choice)")
    add_cosmos_arguments(serve)


def run(args) -> int:
    if args.policy != "cosmos" and given_flags(args):
        raise UserError(f"{', '.join(given_flags(args))} only apply to --policy cosmos; got --policy {args.policy!r}")
    if args.policy == "cosmos":  # normally run in Cosmos Policy's own environment (docs/cosmos-policy.md)
        server = make_server(args)
    else:
        if args.policy == "remote":
            raise UserError("policy 'remote' cannot be served (it is the client); valid: reference, cosmos")
        if args.policy not in policy_names():
            raise choice_error("policy", args.policy, ("reference", "cosmos"))
        cls = policy_class(args.policy)
        if not hasattr(cls, "serving_metadata"):
            raise UserError(f"policy {args.policy!r} cannot be served (it reads the simulator's state, not images); valid: reference, cosmos")
        if args.threads:
            import torch  # third-party and heavy: only a served model with a thread count needs it here

            torch.set_num_threads(args.threads)
        first = cls()
        server = PolicyServer(cls, first.serving_metadata(), host=args.host, port=args.port, observation_type=Observation, user_errors=(UserError,))
        server._idle.append(first)
    identity = "{name}:{version}".format(**server.metadata["policy"])
    try:
        server.serve_forever(ready=lambda port: print(f"stress serve: {identity} on ws://{args.host}:{port}", file=sys.stderr, flush=True))
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    return 0
