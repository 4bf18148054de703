"""What every policy-server client shares (``stress.policies.remote``: stress-policy/1; ``stress.policies.openpi``:
openpi's protocol): the URL check and the faults a reply can raise. Each client stands alone; this module is their
common ground."""

from __future__ import annotations

from urllib.parse import urlsplit

from stress.core.errors import UserError
from stress.core.policy import PolicyFault


class MalformedResponse(PolicyFault):
    kind = "malformed_response"


class ServerError(PolicyFault):
    kind = "policy_server_error"


def check_url(url) -> str:
    """A ws:// or wss:// URL with a host (and a port in range), or UserError."""
    valid = "valid: ws://HOST:PORT or wss://HOST:PORT"
    if not isinstance(url, str) or not url:
        raise UserError(f"policy server URL {url!r} missing; {valid}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UserError(f"malformed policy server URL {url!r}; {valid}") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
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
    except Exception as exc:
        raise UserError(f"policy server {url} unreachable ({first_line(exc)})") from None
    ws.close()
    return metadata


API_KEY_ENV = "STRESS_POLICY_API_KEY"  # the key a client sends (Authorization: Api-Key KEY); never stored in a run


def auth_headers(key: str | None) -> dict | None:
    return {"Authorization": f"Api-Key {key}"} if key else None
