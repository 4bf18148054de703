import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spatial_env():
    """One real LIBERO scene (libero_spatial task 0), shared: building one costs seconds."""
    from stress.envs.libero import LiberoEnv

    env = LiberoEnv("libero_spatial", 0)
    yield env
    env.close()


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "stress.cli", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
