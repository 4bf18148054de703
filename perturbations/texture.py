"""Textures and colours of the table, floor, walls and objects (model layer).

Surfaces are found by name among the geoms the cameras render (``env.visual_geom_groups``): ``table`` =
geoms of a body whose name contains "table" (plain table, living-room table, study desk), ``floor`` =
geoms named or textured "floor", ``walls`` = geoms named "wall*", ``objects`` = the task's objects and
fixtures (``env.object_bodies``); a surface on no geom comes from the env (``env.surface_textures``).

On ALOHA (gym-aloha's scene has no textures; the adapter adds them at build time, rendering exactly like
the stock scene): ``table`` = the tabletop, whose texture is a blank white canvas under its grey rgba,
so hue mode recolours that rgba (a grey table keeps its hue: only ``value`` shows) and pattern/solid
paint the canvas (the mesh has no texture coordinates, so a pattern shows as bands across the table);
``walls`` = the black backdrop (a skybox: hue mode leaves black black, pattern/solid paint it);
``floor`` = nothing (the table stands in the void); ``objects`` = the cube, or the peg and socket.

Table, floor and walls get one of three treatments of their texture pixels (or, for an untextured
surface, of its material/geom colour):

    hue      the colours rotated about the grey axis by ``hue_deg`` and brightness scaled by ``value``
    pattern  a random two-colour block pattern (a 64 px patch tiled over the texture)
    solid    one flat colour

Texture pixels go through ``env.applier.set_texture_data``, which uploads them to the live render context and is
undone at the next reset. The new pixels are computed once per (texture content, treatment) and kept in
a module-level LRU cache, so repeated episodes only copy them. Objects are tinted through
``mat_rgba``/``geom_rgba`` (restored by the env at every reset): ``new = (1 - strength) * old +
strength * colour``, which on textured materials multiplies the texture by that tint.

Severity (the hue sign, colours and patterns are drawn from the family's generator):

    level  table              floor              walls              objects tint
    1      hue +-30 deg       -                  -                  -
    2      hue +-60 deg       hue +-60 deg       -                  -
    3      hue +-90 deg       hue +-90 deg       hue +-90 deg       30 %
    4      pattern or solid   hue +-120 deg      pattern or solid   50 %
    5      pattern or solid   pattern or solid   pattern or solid   80 %

with the brightness factor ``value`` 0.9|1.1, 0.8|1.2, 0.7|1.3, 0.6|1.4 at levels 1-4. Realisation: mean
absolute pixel change (0-255) per camera against the clean render of the same state; a non-identity
sample that changes both cameras by less than 0.5 is not realised.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from typing import Any

import mujoco
import numpy as np

from perturbations.base import Perturbation, register, require_image_change
from stress.core.spec import Layer
from perturbations.space import Choice, Group, ListOf, ParamSpace, Real, Vector
from stress.core.errors import UserError

SURFACES = ("table", "floor", "walls")
MODES = ("hue", "pattern", "solid")
PATCH_CELLS, CELL_PX = 8, 8  # pattern patch: 8 x 8 blocks of 8 px, tiled
CACHE_SIZE = 16  # generated textures kept (a few MB each)
RGB_ROLE = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
# level -> ({surface: (mode, hue deg, value change)}, object tint strength); mode "random" = pattern or solid
LEVELS = {
    1: ({"table": ("hue", 30.0, 0.1)}, 0.0),
    2: ({"table": ("hue", 60.0, 0.2), "floor": ("hue", 60.0, 0.2)}, 0.0),
    3: ({"table": ("hue", 90.0, 0.3), "floor": ("hue", 90.0, 0.3), "walls": ("hue", 90.0, 0.3)}, 0.3),
    4: ({"table": ("random", 0, 0), "floor": ("hue", 120.0, 0.4), "walls": ("random", 0, 0)}, 0.5),
    5: ({"table": ("random", 0, 0), "floor": ("random", 0, 0), "walls": ("random", 0, 0)}, 0.8),
}

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()


def _cached(key: tuple, make) -> np.ndarray:
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    value = _cache[key] = make()
    if len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return value


def hue_matrix(hue_deg: float) -> np.ndarray:
    """RGB rotation about the grey axis (a hue shift that keeps grey levels)."""
    angle = np.deg2rad(hue_deg)
    cos, sin, third = np.cos(angle), np.sin(angle), 1.0 / 3.0
    cross = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) * np.sqrt(third)
    return cos * np.eye(3) + (1.0 - cos) * third + sin * cross


def recolour(rgb: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Colours in 0-1 (..., 3) under a hue/solid/pattern treatment (a pattern counts as its mean colour)."""
    mode = spec.get("mode", "hue")
    if mode == "hue":
        return np.clip(rgb @ hue_matrix(spec.get("hue_deg", 0.0)).T * spec.get("value", 1.0), 0.0, 1.0)
    colours = np.asarray(spec["colours"] if mode == "pattern" else [spec["colour"]], dtype=float)
    return np.broadcast_to(colours.mean(axis=0), rgb.shape).copy()


def texture_pixels(original: np.ndarray, height: int, width: int, channels: int, spec: dict[str, Any]) -> np.ndarray:
    """New pixels (uint8, height x width x channels) of a texture under a treatment; alpha is kept."""
    image = original.reshape(height, width, channels).copy()
    colour_channels = min(3, channels)
    mode = spec.get("mode", "hue")
    if mode == "hue":
        if channels >= 3:
            rgb = image[..., :3].reshape(-1, 3).astype(np.float32) @ hue_matrix(spec.get("hue_deg", 0.0)).T.astype(np.float32)
            image[..., :3] = np.clip(rgb * spec.get("value", 1.0), 0, 255).reshape(height, width, 3).astype(np.uint8)
        else:
            image[..., :1] = np.clip(image[..., :1] * spec.get("value", 1.0), 0, 255).astype(np.uint8)
        return image
    if mode == "solid":
        image[..., :colour_channels] = np.round(np.asarray(spec["colour"])[:colour_channels] * 255).astype(np.uint8)
        return image
    rng = np.random.default_rng(spec["pattern_seed"])  # the pattern's own generator, fixed by the params
    cells = rng.integers(0, 2, size=(PATCH_CELLS, PATCH_CELLS))
    patch = np.round(np.asarray(spec["colours"], dtype=float)[cells] * 255).astype(np.uint8)
    patch = patch.repeat(CELL_PX, axis=0).repeat(CELL_PX, axis=1)
    reps = (-(-height // patch.shape[0]), -(-width // patch.shape[1]), 1)
    image[..., :colour_channels] = np.tile(patch, reps)[:height, :width, :colour_channels]
    return image


def _surface_of(model, geom: int, objects: tuple[str, ...]) -> str | None:
    name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, geom) or ""
    body = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[geom]) or ""
    mat = model.geom_matid[geom]
    material = (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_MATERIAL, mat) or "") if mat >= 0 else ""
    if any(body == obj or body.startswith(obj + "_") for obj in objects):
        return "objects"
    if "table" in body:
        return "table"
    if name == "floor" or "floor" in material:
        return "floor"
    if name.startswith("wall"):
        return "walls"
    return None


def _surface(name: str, doc: str) -> Group:
    rgb = Vector("colour", 3, 0.0, 1.0, "", "[r, g, b]")
    return Group(name, (
        # not searched: pattern and solid need colours a grid cannot give (hue is the default)
        Choice("mode", MODES, "hue: colours rotated about the grey axis; pattern: a random two-colour block pattern; solid: one flat colour", searchable=False),
        Real("hue_deg", -180.0, 180.0, "deg", "hue mode: rotation of the colours about the grey axis", identity=0.0, step=5.0),
        Real("value", 0.0, 3.0, "", "hue mode: brightness factor", identity=1.0, step=0.05),
        ListOf("colours", rgb, 2, 2, "pattern mode: the two colours, each [r, g, b]"),
        Real("pattern_seed", 0, math.inf, "", "pattern mode: seed of the block pattern", default=0, integer=True),
        Vector("colour", 3, 0.0, 1.0, "", "solid mode: the colour, [r, g, b]"),
    ), doc)


# the fields each mode takes (a declaration says what a field is, not which mode it belongs to)
MODE_FIELDS = {"hue": {"hue_deg", "value"}, "pattern": {"colours", "pattern_seed"}, "solid": {"colour"}}


def surface_is_identity(spec: dict[str, Any]) -> bool:
    return spec.get("mode", "hue") == "hue" and spec.get("hue_deg", 0.0) == 0.0 and spec.get("value", 1.0) == 1.0


def _colour(rng: np.random.Generator) -> list[float]:
    return [round(float(v), 4) for v in rng.uniform(0.0, 1.0, size=3)]


@register
class Texture(Perturbation):
    name = "texture"
    layer = Layer.MODEL
    preserves_physics = True
    needs = frozenset({"textures"})
    summary = "textures and colours of table, floor, walls (hue shift, random pattern, solid colour) and object tint"
    severity_meaning = (
        "1: table hue +-30 deg; 2: table, floor hue +-60 deg; 3: table, floor, walls hue +-90 deg, objects tinted 30%; "
        "4: table, walls pattern/solid, floor hue +-120 deg, objects 50%; 5: all pattern/solid, objects 80%"
    )
    space = ParamSpace(
        _surface("table", "table top (every body named *table*, e.g. the study desk); absent = unchanged"),
        _surface("floor", "floor; absent = unchanged"),
        _surface("walls", "walls; absent = unchanged"),
        Group("objects", (
            Vector("tint", 3, 0.0, 1.0, "", "[r, g, b] the objects' colours are blended towards", default=1.0),
            Real("strength", 0.0, 1.0, "", "blend towards the tint", identity=0.0, step=0.01),
        ), "the task's objects and fixtures, tinted"),
    )

    def sample(self, severity: int, rng: np.random.Generator, cameras: tuple[str, ...]) -> dict[str, Any]:
        surfaces, strength = LEVELS[severity]
        params: dict[str, Any] = {}
        for surface, (mode, hue, value) in surfaces.items():
            if mode == "random":
                mode = "pattern" if rng.integers(2) else "solid"
            if mode == "hue":
                sign = 1.0 if rng.integers(2) else -1.0
                params[surface] = {"mode": "hue", "hue_deg": sign * hue, "value": 1.0 + value if rng.integers(2) else 1.0 - value}
            elif mode == "pattern":
                params[surface] = {"mode": "pattern", "colours": [_colour(rng), _colour(rng)], "pattern_seed": int(rng.integers(2**31 - 1))}
            else:
                params[surface] = {"mode": "solid", "colour": _colour(rng)}
        if strength:
            params["objects"] = {"tint": _colour(rng), "strength": strength}
        return params

    def check_params(self, params: dict[str, Any]) -> None:
        self.space.validate(self.name, params)
        for surface in SURFACES:
            spec = params.get(surface, {})
            mode = spec.get("mode", "hue")
            unknown = set(spec) - MODE_FIELDS[mode] - {"mode"}
            if unknown:
                raise UserError(f"unknown texture {surface} {mode} parameter(s) {sorted(unknown)}; valid: {', '.join(sorted(MODE_FIELDS[mode]))}")
            if mode != "hue" and not MODE_FIELDS[mode] - {"pattern_seed"} <= set(spec):
                raise UserError(f"texture {surface} {mode} needs {' and '.join(sorted(MODE_FIELDS[mode] - {'pattern_seed'}))}; got {spec!r}")

    def is_identity(self, params: dict[str, Any]) -> bool:
        return all(surface_is_identity(params[s]) for s in SURFACES if s in params) and params.get("objects", {}).get("strength", 0.0) == 0.0

    def apply_model(self, env, params: dict[str, Any]) -> None:
        if self.is_identity(params):
            return
        model = env.model  # rgba fields and textures are pristine when this hook runs
        objects = tuple(env.object_bodies)
        done: set[tuple[str, int]] = set()  # textures/materials shared by several geoms are changed once
        for geom in range(model.ngeom):
            if model.geom_group[geom] not in env.visual_geom_groups:  # LIBERO: group 0 = unrendered collision geoms
                continue
            surface = _surface_of(model, geom, objects)
            if surface is None or surface not in params or (surface in SURFACES and surface_is_identity(params[surface])):
                continue
            mat = model.geom_matid[geom]
            tex = model.mat_texid[mat, RGB_ROLE] if mat >= 0 else -1
            target = ("material", mat) if mat >= 0 else ("geom", geom)
            if surface != "objects" and tex >= 0:
                if tex in env.canvas_textures:  # a blank white canvas (ALOHA's table): the colour is the geom's rgba
                    self._paint_canvas(env, model, geom, tex, params[surface], done)
                    continue
                target = ("texture", tex)
            if target in done:
                continue
            done.add(target)
            if target[0] == "texture":
                env.applier.set_texture_data(tex, self._pixels(model, tex, params[surface]))
                continue
            rgba = model.mat_rgba[mat] if mat >= 0 else model.geom_rgba[geom]
            if surface == "objects":  # on a textured material the rgba multiplies the texture: a tint
                tint = np.asarray(params[surface].get("tint", [1.0, 1.0, 1.0]), dtype=float)
                strength = params[surface].get("strength", 0.0)
                rgba[:3] = (1.0 - strength) * rgba[:3] + strength * tint
            else:
                rgba[:3] = recolour(rgba[:3], params[surface])
        # surfaces on no geom (ALOHA's backdrop skybox as "walls")
        for surface, textures in env.surface_textures.items():
            if surface in params and not surface_is_identity(params[surface]):
                for tex in textures:
                    env.applier.set_texture_data(tex, self._pixels(model, tex, params[surface]))

    def _paint_canvas(self, env, model, geom: int, tex: int, spec: dict[str, Any], done: set) -> None:
        """A surface whose texture is blank white takes its colour from the geom's rgba (which wins over
        the material's): hue mode recolours that rgba; pattern and solid paint the texture and turn the
        rgba white, so the painted colours show as given."""
        if spec.get("mode", "hue") == "hue":
            model.geom_rgba[geom, :3] = recolour(model.geom_rgba[geom, :3], spec)
            return
        if ("texture", tex) not in done:
            done.add(("texture", tex))
            env.applier.set_texture_data(tex, self._pixels(model, tex, spec))
        model.geom_rgba[geom, :3] = 1.0

    @staticmethod
    def _pixels(model, tex: int, spec: dict[str, Any]) -> np.ndarray:
        height, width, channels = int(model.tex_height[tex]), int(model.tex_width[tex]), int(model.tex_nchannel[tex])
        start = model.tex_adr[tex]
        original = model.tex_data[start : start + height * width * channels]
        # keyed by the texture's content (textures at one id differ between scenes), not its id
        key = (height, width, channels, zlib.crc32(original), repr(sorted(spec.items())))
        return _cached(key, lambda: texture_pixels(original, height, width, channels, spec))

    def check(self, env, params: dict[str, Any]) -> dict[str, Any]:
        if self.is_identity(params):
            return {}
        return require_image_change(env, self.name)
