"""The ``lerobot`` policy backend: a LeRobot policy directory (``--policy-path DIR``), run in LeRobot's own Python
environment (``--lerobot-python PATH`` or ``$STRESS_LEROBOT_PYTHON``) by ``lerobot_server.py`` and driven over
stress-policy/1 (docs/remote-policy.md, "LeRobot").

(Not named ``lerobot.py``: the server runs as a script from this folder, where such a file would shadow the real
``lerobot`` package.)

LeRobot cannot be imported here (it needs another Python and another torch than the suite's), so each worker
process starts the server once, with that Python, on a free loopback port (``--exit-with-parent``: a killed worker
leaves nothing behind), and talks to it with the remote client. What is served is in the episode key
(``served = lerobot:<type>-<sha256 of config and weights>``); where the directory and the Python are is not (a
run resumes from another checkout of the same policy).
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import ClassVar

from stress.core.errors import UserError
from stress.core.policy import Decision, Observation, PolicyFault, PolicyUnavailable
from stress.policies import lerobot_server
from stress.policies.remote import DEFAULT_TIMEOUT_S, RemotePolicy

PYTHON_ENV = "STRESS_LEROBOT_PYTHON"
START_TIMEOUT_S = 600.0  # importing lerobot and torch and loading the policy: ~40 s on the 2-core VM under load
_servers: dict[tuple[str, str, str], tuple[subprocess.Popen, str]] = {}  # (python, policy dir, simulator) -> (process, url)


def check_python(python) -> str:
    """LeRobot's Python: an executable file, or UserError."""
    if not python:
        raise UserError(f"--policy lerobot needs LeRobot's Python: --lerobot-python PATH or ${PYTHON_ENV} (the recipe: docs/remote-policy.md, LeRobot)")
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise UserError(f"--lerobot-python {python!r} is not an executable file; valid: the python of an environment with lerobot installed")
    return str(python)


def check_policy(path, simulator: str) -> str:
    """The policy directory fits the simulator (its files, its features): ``served``, or UserError with one line."""
    try:
        mapping = lerobot_server.env_mapping(simulator)
        config = lerobot_server.read_config(path)
        lerobot_server.check_features(config, mapping)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return f"lerobot:{config['type']}-{lerobot_server.policy_digest(path)}"


def image_size(path, simulator: str) -> int:
    """The suite's ``image_size`` that renders what LeRobot's env of the simulator hands the policy (ALOHA: 480 x 640;
    LIBERO: the checkpoint's square image size). Call after ``check_policy``."""
    return lerobot_server.image_size(lerobot_server.read_config(path), lerobot_server.env_mapping(simulator))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def stop_servers() -> None:
    """Stop every server this process started (they also stop when the process ends)."""
    while _servers:
        _stop(_servers.popitem()[1][0])


def server_url(python: str, path: str, simulator: str) -> str:
    """The ws:// address of this process's server of the policy, started now if it is not running."""
    key = (python, path, simulator)
    if key in _servers and _servers[key][0].poll() is None:
        return _servers[key][1]
    command = [python, str(Path(lerobot_server.__file__)), "--policy-path", path, "--simulator", simulator, "--port", "0", "--exit-with-parent"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    atexit.register(_stop, proc)
    lines, deadline = [], time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:  # the server ended before it listened: its last line says why
            proc.wait()
            last = next((x.strip() for x in reversed(lines) if x.strip()), f"exit code {proc.returncode}")
            raise PolicyUnavailable(f"LeRobot policy server did not start ({last})")
        lines.append(line)
        match = re.search(r"ws://[\w.]+:\d+", line)
        if match:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep its pipe drained
            _servers[key] = (proc, match.group(0))
            return match.group(0)
    _stop(proc)
    raise PolicyUnavailable(f"LeRobot policy server did not listen within {START_TIMEOUT_S:g} s")


class LerobotPolicy:
    """A LeRobot policy served from LeRobot's environment; honours the policy protocol (``stress.core.policy``)."""

    name: ClassVar[str] = "lerobot"
    modes: ClassVar[tuple[str, ...]] = ("direct",)  # LeRobot's select_action: one action, no candidates
    simulators: ClassVar[tuple[str, ...]] = tuple(lerobot_server.MAPPINGS)
    uses_images: ClassVar[bool] = True
    actions_only: ClassVar[bool] = True  # no value, no predicted future

    def __init__(self, policy_path: str | None = None, python: str | None = None, simulator: str = "aloha", served: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S):
        self.policy_path, self.python, self.simulator, self.served, self.timeout_s = policy_path, python, simulator, served, float(timeout_s)
        self._client: RemotePolicy | None = None

    @classmethod
    def check_options(cls, options: dict) -> None:
        check_python(options.get("python") or os.environ.get(PYTHON_ENV))
        served = check_policy(options.get("policy_path"), options.get("simulator", "aloha"))
        if options.get("served") not in (None, served):
            raise UserError(f"--policy-path {options.get('policy_path')!r} now holds {served!r}; the run was started with {options['served']!r}")

    def reset(self, instruction: str, seed: int, mode: str = "direct", n_candidates: int = 1, aggregation: str | None = None) -> None:
        if mode != "direct":
            raise PolicyFault(f"mode {mode!r} not served by a LeRobot policy; valid: direct")
        python = check_python(self.python or os.environ.get(PYTHON_ENV))
        url = server_url(python, str(Path(self.policy_path).resolve()), self.simulator)
        if self._client is None or self._client.server != url:
            self.close()
            self._client = RemotePolicy(server=url, served=self.served, timeout_s=self.timeout_s)
        self._client.reset(instruction, seed, mode=mode)

    @property
    def cameras(self) -> tuple[str, ...] | None:
        """The cameras the checkpoint reads, from its server's handshake (LeRobot's ALOHA policies: ``top`` only)."""
        return self._client.cameras if self._client is not None else None

    def act(self, obs: Observation) -> Decision:
        if self._client is None:
            raise PolicyFault("act before reset")
        return self._client.act(obs)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
