"""What every policy-server client shares (``stress.policies.remote``: stress-policy/1; ``stress.policies.openpi``:
openpi's protocol; ``stress.policies.cosmos_deploy``: Cosmos Policy's deploy.py): the URL check, the faults a reply
can raise and the check of a reply's action chunk. Each client stands alone; this module is their common ground.
The pre-run inference check that drives them all is ``stress.runners.preflight``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.exceptions import InvalidHandshake

from stress.core.errors import UserError
from stress.core.policy import PolicyFault


class MalformedResponse(PolicyFault):
    kind = "malformed_response"


class ServerError(PolicyFault):
    kind = "policy_server_error"


WEBSOCKET, HTTP = ("ws", "wss"), ("http", "https")


def check_url(url, schemes: tuple[str, ...] = WEBSOCKET) -> str:
    """A URL of one of ``schemes`` (ws/wss for the websocket clients, http/https for deploy.py's) with a host (and
    a port in range), or UserError; a URL of the other kind names the backend that speaks it."""
    valid = "valid: " + " or ".join(f"{s}://HOST:PORT" for s in schemes)
    if not isinstance(url, str) or not url:
        raise UserError(f"policy server URL {url!r} missing; {valid}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UserError(f"malformed policy server URL {url!r}; {valid}") from None
    if parts.scheme in WEBSOCKET + HTTP and parts.scheme not in schemes and parts.hostname:
        other = "--policy cosmos-deploy (Cosmos Policy's deploy.py)" if parts.scheme in HTTP else "--policy remote or openpi"
        raise UserError(f"policy server URL {url!r} is {parts.scheme}://, which this client does not speak (that is {other}); {valid}")
    if parts.scheme not in schemes or not parts.hostname:
        raise UserError(f"malformed policy server URL {url!r}; {valid}")
    if port is None and parts.netloc.endswith(":"):
        raise UserError(f"malformed policy server URL {url!r}; {valid}")
    return url


def first_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no detail'}"


def close_quietly(ws) -> None:
    """Close a client's websocket, whatever state it is in (a broken connection raises on close)."""
    if ws is not None:
        try:
            ws.close()
        except Exception:
            pass


def probe_server(url: str, connect, timeout: float) -> dict:
    """Connect once with the client's ``connect(url, timeout) -> (socket, metadata)`` (a ValueError: the server
    speaks another protocol), read the metadata, disconnect: the metadata, or UserError (checks before a run)."""
    check_url(url)
    try:
        ws, metadata = connect(url, timeout)
    except ValueError as exc:
        raise UserError(f"policy server {url} is incompatible: {exc}") from None
    except InvalidHandshake as exc:  # an HTTP server (deploy.py's, say) answers the websocket upgrade with a status
        raise UserError(f"policy server {url} does not speak websocket ({first_line(exc)}); an HTTP policy server such as "
                        f"Cosmos Policy's deploy.py is --policy cosmos-deploy --policy-server http://HOST:PORT") from None
    except Exception as exc:
        raise UserError(f"policy server {url} unreachable ({first_line(exc)})") from None
    ws.close()
    return metadata


API_KEY_ENV = "STRESS_POLICY_API_KEY"  # the key a client sends (Authorization: Api-Key KEY); never stored in a run


def auth_headers(key: str | None) -> dict | None:
    return {"Authorization": f"Api-Key {key}"} if key else None


def check_chunk(actions: Any, action_dim: int, field: str = "actions", min_rows: int = 1) -> np.ndarray:
    """A reply's action chunk: a finite numeric (chunk, action_dim) array with at least ``min_rows`` rows, as float64;
    MalformedResponse naming the field and what was expected otherwise. Every client checks its chunks here."""
    if not isinstance(actions, np.ndarray):
        raise MalformedResponse(f"field {field!r} is a {type(actions).__name__}, not an array")
    if actions.dtype.kind not in "fiu":
        raise MalformedResponse(f"field {field!r} has dtype {actions.dtype}; expected numbers")
    if actions.ndim != 2 or actions.shape[1] != action_dim:
        raise MalformedResponse(f"field {field!r} has shape {actions.shape}; expected (chunk, {action_dim})")
    if len(actions) < min_rows:
        raise MalformedResponse(f"field {field!r} has {len(actions)} actions; expected at least {min_rows}")
    if not np.isfinite(actions).all():
        raise MalformedResponse(f"field {field!r} holds NaN or infinite values")
    return np.array(actions, dtype=np.float64)
