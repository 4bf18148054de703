"""The one registry helper (stress.core.registry) and the public ``stress`` API that exposes it."""

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

import stress
from conftest import ROOT
from perturbations.base import register
from stress.core import registry as registry_module
from stress.core.errors import UserError
from stress.core.registry import Registry
from stress.core.spec import ScenarioSpec


def plugins(monkeypatch, *points: EntryPoint) -> None:
    """Pretend these entry points are installed (every group sees the ones of its own group)."""
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [p for p in points if p.group == group])


def test_register_by_object_decorator_and_lazy_string(monkeypatch):
    plugins(monkeypatch)
    things = Registry("thing", "stress.things")
    things.register("one", 1)

    @things.register("double")
    def double(x):
        return 2 * x

    things.register("dumps", "json:dumps")  # not imported until asked for
    assert things.names() == ("one", "double", "dumps") and "double" in things and list(things) == ["one", "double", "dumps"]
    assert things.get("double") is double and things.get("dumps") is json.dumps and things.get("one") == 1


def test_sorted_names_and_unknown_name_lists_the_valid_ones(monkeypatch):
    plugins(monkeypatch)
    things = Registry("thing", "stress.things", sort=True)
    for name in ("b", "a", "c"):
        things.register(name, name)
    assert things.names() == ("a", "b", "c")
    with pytest.raises(UserError, match=r"^unknown thing 'z'; valid: a, b, c$"):
        things.get("z")


def test_builtins_hook_runs_once_on_first_use(monkeypatch):
    plugins(monkeypatch)
    calls = []
    things = Registry("thing", "stress.things", builtins=lambda: (calls.append(1), things.register("found", 1)))
    assert calls == []  # nothing at construction
    assert things.names() == ("found",) and things.names() == ("found",) and calls == [1]


def test_plugins_come_from_entry_points_and_load_only_when_asked(monkeypatch):
    plugins(monkeypatch, EntryPoint("dumps", "json:dumps", "stress.things"), EntryPoint("broken", "no_such_module_here:x", "stress.things"),
            EntryPoint("other", "json:loads", "stress.others"))
    things = Registry("thing", "stress.things")
    things.register("one", 1)
    assert things.names() == ("one", "dumps", "broken")  # the broken one is listed: its name costs no import
    assert things.get("dumps") is json.dumps
    with pytest.raises(UserError, match="thing 'broken' .*no_such_module_here:x.* failed to load: ModuleNotFoundError"):
        things.get("broken")


def test_a_plugin_clashing_with_a_builtin_is_an_error_naming_both(monkeypatch):
    plugins(monkeypatch, EntryPoint("one", "json:dumps", "stress.things"))
    things = Registry("thing", "stress.things")
    things.register("one", "json:loads")
    with pytest.raises(UserError, match=r"thing 'one' is declared twice: built-in json:loads and plug-in json:dumps"):
        things.names()
    twice = Registry("thing", "stress.things")
    twice.register("two", 2)
    with pytest.raises(UserError, match="'two' is declared twice"):
        twice.register("two", 3)


def test_the_nine_registries_keep_their_names_and_messages():
    from perturbations.base import FAMILIES
    from scenarios.properties import PROPERTIES
    from scenarios.protocols import PROTOCOLS
    from scenarios.samplers import SAMPLERS
    from scenarios.search import SHRINKERS
    from stress.envs import SIMULATORS
    from stress.policies import POLICIES
    from scenarios.studies import STUDIES
    from stress.runners import BACKENDS

    groups = {r.group for r in (FAMILIES, POLICIES, SIMULATORS, PROPERTIES, SAMPLERS, SHRINKERS, BACKENDS, PROTOCOLS, STUDIES)}
    assert groups == {f"stress.{g}" for g in ("families", "policies", "simulators", "properties", "samplers", "shrinkers", "backends", "protocols", "studies")}
    assert tuple(SAMPLERS) == ("random", "halton", "sobol", "ce", "bandit", "novelty", "guided", "blind-ce", "blind-novelty", "blind-guided") and tuple(SHRINKERS) == ("greedy", "hypothesis")
    assert tuple(POLICIES)[:4] == ("reference", "expert", "aloha-expert", "remote") and tuple(BACKENDS) == ("local", "ray")
    assert tuple(SIMULATORS) == ("libero", "aloha", "robosuite") and "cosmos-libero" in PROTOCOLS
    assert tuple(STUDIES) == ("aggregation", "value-source", "denoising", "candidates", "temperature")
    assert list(FAMILIES) == sorted(FAMILIES) and "occlusion" in FAMILIES and list(PROPERTIES) == sorted(PROPERTIES)
    with pytest.raises(UserError, match=r"^unknown sampler 'genetic'; valid: random, halton, sobol, ce, bandit, novelty, guided, blind-ce, blind-novelty, blind-guided$"):
        SAMPLERS.get("genetic")


def test_every_public_name_resolves():
    assert stress.__all__ == sorted(set(stress.__all__))
    for name in stress.__all__:
        assert getattr(stress, name) is not None, name
    assert stress.register_family is register and stress.ScenarioSpec is ScenarioSpec
    with pytest.raises(AttributeError):
        stress.no_such_name


def test_the_public_api_is_light():
    """``import stress`` (which every module of the suite imports first) resolves its names on use: importing the
    vocabulary loads nothing beyond the standard library, numpy and pyarrow."""
    code = ("import json, sys; before = set(sys.modules); import stress, stress.core.spec, stress.core.registry; "
            "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert set(json.loads(proc.stdout)) <= {"stress", "numpy"}, proc.stdout + proc.stderr
