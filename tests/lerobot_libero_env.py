"""LeRobot's own LIBERO env wrapper (``lerobot/envs/libero.py``: its ``LiberoEnv`` gym env) run in the suite's
environment, on the suite's LIBERO (hf-libero) and robosuite: LeRobot itself cannot be imported here (another Python,
another torch), and LeRobot's environment has no LIBERO installed. The file is read from LeRobot's installation and
executed as it is; the two names it imports from the rest of LeRobot are given to it: ``RobotObservation`` (a type
alias, ``dict``) and ``parse_camera_names`` (executed from LeRobot's own ``envs/utils.py`` source, that function alone).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

from stress.envs.libero_setup import import_libero


def lerobot_root(python: str) -> Path:
    """The ``lerobot`` package folder of LeRobot's Python (found without importing it)."""
    code = "import importlib.util as u; print(list(u.find_spec('lerobot').submodule_search_locations)[0])"
    return Path(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True, timeout=120).stdout.strip())


def _function_source(path: Path, name: str) -> str:
    source = path.read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(source, node)


def load_libero_env_class(python: str):
    """LeRobot's ``LiberoEnv`` class, its module executed from LeRobot's installation of ``python``."""
    import_libero()  # the suite's offline LIBERO config first: LeRobot's module imports libero.libero
    root = lerobot_root(python)
    utils = types.ModuleType("lerobot.envs.utils")
    exec("from collections.abc import Sequence\n" + _function_source(root / "envs" / "utils.py", "parse_camera_names"), utils.__dict__)
    utils._LazyAsyncVectorEnv = None  # only LeRobot's vector-env factory uses it
    stubs = {"lerobot": types.ModuleType("lerobot"), "lerobot.lerobot_types": types.ModuleType("lerobot.lerobot_types"),
             "lerobot.envs": types.ModuleType("lerobot.envs"), "lerobot.envs.utils": utils}
    stubs["lerobot"].__path__, stubs["lerobot.envs"].__path__ = [], []
    stubs["lerobot.lerobot_types"].RobotObservation = dict
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        module = types.ModuleType("lerobot.envs.libero")
        module.__package__ = "lerobot.envs"
        source = (root / "envs" / "libero.py").read_text()
        exec(compile(source, str(root / "envs" / "libero.py"), "exec"), module.__dict__)
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return module.LiberoEnv, module._get_suite
