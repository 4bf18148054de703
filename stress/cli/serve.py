"""``stress serve``: serve a policy over a websocket (docs/remote-policy.md) for ``stress run --policy remote``
(``--wire stress``, the default) or for openpi's clients and ``--policy openpi`` (``--wire openpi``)."""

from __future__ import annotations

import os
import sys

from stress.cli.args import DEFAULT_POLICY, int_in, non_negative_int
from stress.core.errors import UserError, choice_error
from stress.core.policy import Observation
from stress.policies import policy_class, policy_names
from stress.policies.client import API_KEY_ENV
from stress.policies.cosmos_server import add_arguments as add_cosmos_arguments
from stress.policies.cosmos_server import given_flags, make_server
from stress.policies.serve import WIRES, PolicyServer, check_exposure


def add_arguments(serve) -> None:
    serve.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy to serve: reference, or cosmos in Cosmos Policy's environment (default {DEFAULT_POLICY})")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only; any other address needs --api-key)")
    serve.add_argument("--port", type=int_in(0, 65535), default=8765, help="port (default 8765; 0 picks a free one, printed on start)")
    serve.add_argument("--wire", default="stress", help="protocol: stress (stress-policy/1, the default: reset, seeds, planning, predictions) or "
                       "openpi (openpi's websocket protocol: its clients and harnesses drive the policy; direct mode, actions only)")
    serve.add_argument("--api-key", metavar="KEY", help=f"refuse connections without the header 'Authorization: Api-Key KEY' (openpi's); default: ${API_KEY_ENV}")
    serve.add_argument("--max-frame-mb", type=float, metavar="MB", help="largest request frame accepted (default: the handshake's cameras x image size x 3 bytes, "
                       "twice, plus 1 MiB); a larger one is refused before it is read, the connection closed with 1009")
    serve.add_argument("--seed", type=int, default=0, help="--wire openpi: the policy seed of every episode (openpi's protocol sends none; default 0)")
    serve.add_argument("--threads", type=non_negative_int, default=0, help="torch threads of the served model (default 0: torch's own choice)")
    add_cosmos_arguments(serve)


def run(args) -> int:
    if args.policy != "cosmos" and given_flags(args):
        raise UserError(f"{', '.join(given_flags(args))} only apply to --policy cosmos; got --policy {args.policy!r}")
    if args.wire not in WIRES:
        raise choice_error("--wire", args.wire, WIRES)
    if args.max_frame_mb is not None and not args.max_frame_mb > 0:
        raise UserError(f"--max-frame-mb {args.max_frame_mb:g} invalid; valid: megabytes > 0")
    args.api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    args.max_frame = None if args.max_frame_mb is None else int(args.max_frame_mb * 2**20)
    try:
        check_exposure(args.host, args.api_key)  # before a model loads
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.policy == "cosmos":  # normally run in Cosmos Policy's own environment (docs/cosmos-policy.md)
        server = make_server(args)
    else:
        if args.policy in ("remote", "openpi"):
            raise UserError(f"policy {args.policy!r} cannot be served (it is a client); valid: reference, cosmos")
        if args.policy not in policy_names():
            raise choice_error("policy", args.policy, ("reference", "cosmos"))
        cls = policy_class(args.policy)
        if not hasattr(cls, "serving_metadata"):
            raise UserError(f"policy {args.policy!r} cannot be served (it reads the simulator's state, not images); valid: reference, cosmos")
        if args.threads:
            import torch  # third-party and heavy: only a served model with a thread count needs it here

            torch.set_num_threads(args.threads)
        first = cls()
        try:
            server = PolicyServer(cls, first.serving_metadata(), host=args.host, port=args.port, observation_type=Observation, user_errors=(UserError,),
                                  wire=args.wire, api_key=args.api_key, max_frame=args.max_frame, seed=args.seed)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        server._idle.append(first)
    identity = "{name}:{version}".format(**server.metadata["policy"])
    wire = "stress-policy/1" if args.wire == "stress" else "openpi's protocol"
    try:
        server.serve_forever(ready=lambda port: print(f"stress serve: {identity} on ws://{args.host}:{port} ({wire}{', key required' if args.api_key else ''})",
                                                      file=sys.stderr, flush=True))
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    return 0
