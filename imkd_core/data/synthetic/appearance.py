"""How objects look: per-class textured rectangles on the six faces of a box (what makes classes
distinguishable in the cameras), and the unit-box face geometry the camera and LiDAR share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Faces of the unit box [-0.5, 0.5]^3: origin, u axis, v axis, outward normal.
# 0 front (+x), 1 back (-x), 2 left (+y), 3 right (-y), 4 top (+z), 5 bottom (-z).
# Sides use u from back (0) to front (1); ends use u from right (0) to left (1); v is up.
_FACE_O = np.array([[0.5, -0.5, -0.5], [-0.5, -0.5, -0.5], [-0.5, 0.5, -0.5], [-0.5, -0.5, -0.5],
                    [-0.5, -0.5, 0.5], [-0.5, -0.5, -0.5]])
_FACE_U = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]], np.float64)
_FACE_V = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0]], np.float64)
_FACE_N = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
_F, _B, _L, _R, _T, _D = range(6)
_UNIT_CORNERS = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
_SIDES, _ENDS, _VERT = (_L, _R), (_F, _B), (_F, _B, _L, _R)

_CAR_COLOURS = ((190, 25, 30), (25, 60, 160), (225, 225, 230), (35, 35, 40), (150, 152, 158), (25, 105, 60),
                (120, 20, 40), (60, 130, 190), (200, 160, 40))
_SHIRTS = ((200, 40, 40), (40, 90, 190), (240, 240, 235), (40, 140, 70), (230, 190, 40), (120, 60, 150),
           (30, 30, 35), (240, 120, 160), (100, 180, 200))
_TROUSERS = ((30, 35, 60), (25, 25, 28), (90, 90, 95), (150, 130, 95), (60, 80, 120))
_SKIN = ((240, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45))
_GLASS = (45, 60, 75)
_TYRE = (22, 22, 24)
_DARK = (40, 40, 44)


class _StyleBuilder:
    """Collects textured rectangles (face, u0, u1, v0, v1, r, g, b) of one box."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, ...]] = []

    def add(self, faces: Sequence[int] | int, u0: float, u1: float, v0: float, v1: float,
            col: Sequence[float]) -> None:
        for f in (faces,) if isinstance(faces, int) else faces:
            self.rows.append((f, u0, u1, v0, v1, *col))

    def array(self) -> np.ndarray:
        return np.array(self.rows, np.float64).reshape(-1, 8)


def _jit(rng: np.random.Generator, col: Sequence[float], amount: float = 0.08) -> tuple[float, float, float]:
    f = 1.0 + rng.uniform(-amount, amount)
    return tuple(float(np.clip(c * f + rng.uniform(-6, 6), 0, 255)) for c in col)  # type: ignore[return-value]


def _scale(col: Sequence[float], f: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, c * f)) for c in col)  # type: ignore[return-value]


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _car(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
         size: tuple[float, float, float]) -> None:
    body = _jit(rng, _pick(rng, _CAR_COLOURS))
    light = (240, 235, 200)
    sb.add(_SIDES, 0, 1, 0, 0.26, _TYRE)
    sb.add(_SIDES, 0, 1, 0.26, 0.58, body)
    sb.add(_SIDES, 0, 1, 0.58, 1.0, _scale(body, 0.85))
    sb.add(_SIDES, 0.1, 0.47, 0.6, 0.9, _GLASS)
    sb.add(_SIDES, 0.52, 0.88, 0.6, 0.9, _GLASS)
    sb.add(_ENDS, 0, 1, 0, 0.22, _DARK)
    sb.add(_ENDS, 0, 1, 0.22, 0.58, body)
    sb.add(_ENDS, 0, 1, 0.58, 1.0, _scale(body, 0.85))
    sb.add(_ENDS, 0.08, 0.92, 0.6, 0.92, _GLASS)
    sb.add(_F, 0.06, 0.26, 0.36, 0.5, light)
    sb.add(_F, 0.74, 0.94, 0.36, 0.5, light)
    sb.add(_F, 0.32, 0.68, 0.24, 0.4, _DARK)
    sb.add(_B, 0.05, 0.24, 0.36, 0.5, (200, 20, 20))
    sb.add(_B, 0.76, 0.95, 0.36, 0.5, (200, 20, 20))
    sb.add(_B, 0.4, 0.6, 0.26, 0.34, (230, 230, 220))
    sb.add(_T, 0, 1, 0, 1, body)
    sb.add(_T, 0.25, 0.7, 0.12, 0.88, _scale(body, 0.75))


def _truck(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
           size: tuple[float, float, float]) -> None:
    cargo = _jit(rng, _pick(rng, ((235, 235, 235), (200, 200, 205), (40, 80, 160), (220, 120, 30),
                                  (150, 30, 30))))
    cab = _jit(rng, _pick(rng, ((200, 30, 30), (240, 240, 240), (30, 60, 150), (60, 60, 65))))
    stripe = _jit(rng, _pick(rng, ((200, 30, 30), (30, 90, 180), (30, 140, 60), (20, 20, 20))))
    sb.add(_SIDES, 0, 1, 0, 0.16, _TYRE)
    sb.add(_SIDES, 0, 0.74, 0.16, 1, cargo)
    sb.add(_SIDES, 0.03, 0.71, 0.55, 0.63, stripe)
    sb.add(_SIDES, 0.76, 1, 0.16, 0.72, cab)
    sb.add(_SIDES, 0.8, 0.97, 0.46, 0.68, _GLASS)
    sb.add(_F, 0, 1, 0, 0.16, _DARK)
    sb.add(_F, 0, 1, 0.16, 0.72, cab)
    sb.add(_F, 0.06, 0.94, 0.44, 0.68, _GLASS)
    sb.add(_F, 0.05, 0.2, 0.2, 0.28, (240, 235, 200))
    sb.add(_F, 0.8, 0.95, 0.2, 0.28, (240, 235, 200))
    sb.add(_F, 0, 1, 0.76, 1, cargo)
    sb.add(_B, 0, 1, 0, 0.16, _DARK)
    sb.add(_B, 0, 1, 0.16, 1, _scale(cargo, 0.92))
    sb.add(_B, 0.49, 0.51, 0.2, 0.98, _DARK)
    sb.add(_B, 0.04, 0.14, 0.18, 0.24, (200, 20, 20))
    sb.add(_B, 0.86, 0.96, 0.18, 0.24, (200, 20, 20))
    sb.add(_T, 0, 0.74, 0, 1, cargo)


def _bus(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
         size: tuple[float, float, float]) -> None:
    body = _jit(rng, _pick(rng, ((200, 30, 35), (30, 140, 70), (235, 235, 240), (30, 80, 170))))
    roof = (235, 235, 235)
    sb.add(_SIDES, 0, 1, 0, 0.12, _TYRE)
    sb.add(_SIDES, 0, 1, 0.12, 0.42, body)
    sb.add(_SIDES, 0, 1, 0.42, 0.86, _scale(body, 0.8))
    for k in range(8):
        sb.add(_SIDES, 0.03 + k * 0.118, 0.03 + k * 0.118 + 0.1, 0.46, 0.82, _GLASS)
    sb.add(_SIDES, 0, 1, 0.86, 1, roof)
    sb.add(_ENDS, 0, 1, 0, 0.12, _DARK)
    sb.add(_ENDS, 0, 1, 0.12, 1, body)
    sb.add(_F, 0.05, 0.95, 0.36, 0.84, _GLASS)
    sb.add(_F, 0.18, 0.82, 0.87, 0.96, (250, 180, 40))
    sb.add(_B, 0.12, 0.88, 0.6, 0.84, _GLASS)
    sb.add(_B, 0.05, 0.15, 0.18, 0.3, (200, 20, 20))
    sb.add(_B, 0.85, 0.95, 0.18, 0.3, (200, 20, 20))
    sb.add(_T, 0, 1, 0, 1, roof)


def _trailer(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
             size: tuple[float, float, float]) -> None:
    cont = _jit(rng, _pick(rng, ((230, 230, 230), (150, 150, 155), (170, 40, 35), (40, 70, 140),
                                 (40, 110, 80))))
    sb.add(_SIDES, 0, 1, 0.14, 0.22, _DARK)
    sb.add(_SIDES, 0.03, 0.3, 0, 0.14, _TYRE)
    sb.add(_SIDES, 0.77, 0.8, 0, 0.14, _DARK)
    sb.add(_SIDES, 0, 1, 0.22, 1, cont)
    for k in range(12):
        sb.add(_SIDES, k / 12 + 0.01, k / 12 + 0.045, 0.24, 0.98, _scale(cont, 0.82))
    sb.add(_F, 0, 1, 0.22, 1, _scale(cont, 0.9))
    sb.add(_F, 0.1, 0.9, 0.14, 0.22, _DARK)
    sb.add(_B, 0, 1, 0.22, 1, cont)
    sb.add(_B, 0.05, 0.4, 0, 0.2, _TYRE)
    sb.add(_B, 0.6, 0.95, 0, 0.2, _TYRE)
    sb.add(_B, 0.495, 0.505, 0.24, 0.98, _DARK)
    sb.add(_B, 0.02, 0.98, 0.22, 0.27, (200, 30, 30))
    sb.add(_T, 0, 1, 0, 1, _scale(cont, 1.05))


def _construction_vehicle(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
                          size: tuple[float, float, float]) -> None:
    y = _jit(rng, _pick(rng, ((240, 180, 20), (245, 130, 20))))
    sb.add(_VERT, 0, 1, 0, 0.22, (30, 30, 30))
    sb.add(_SIDES, 0, 0.62, 0.22, 0.55, y)
    sb.add(_SIDES, 0.0, 0.58, 0.55, 0.72, _scale(y, 0.8))
    sb.add(_SIDES, 0.62, 0.98, 0.22, 1.0, y)
    sb.add(_SIDES, 0.66, 0.95, 0.56, 0.95, _GLASS)
    for k in range(8):
        sb.add(_ENDS, k / 8, (k + 1) / 8, 0.22, 0.36, (25, 25, 25) if k % 2 else (245, 200, 20))
    sb.add(_ENDS, 0, 1, 0.36, 0.58, y)
    sb.add(_F, 0.3, 1, 0.58, 1.0, y)
    sb.add(_F, 0.36, 0.95, 0.62, 0.95, _GLASS)
    sb.add(_B, 0, 1, 0.58, 0.75, _scale(y, 0.85))
    sb.add(_T, 0, 1, 0, 1, _scale(y, 0.9))
    sb.add(_T, 0.62, 0.98, 0.1, 0.9, (60, 60, 60))


def _barrier(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
             size: tuple[float, float, float]) -> None:
    if rng.random() < 0.5:  # plastic red/white
        red, white = (215, 30, 30), (240, 240, 240)
        for k in range(6):
            sb.add(_ENDS, k / 6, (k + 1) / 6, 0.06, 1, red if k % 2 == 0 else white)
        sb.add(_ENDS, 0, 1, 0, 0.06, _DARK)
        sb.add(_SIDES, 0, 1, 0, 1, red)
        sb.add(_T, 0, 1, 0, 1, white)
    else:  # concrete with a reflective band
        grey = _jit(rng, (175, 172, 165))
        sb.add(_VERT, 0, 1, 0, 1, grey)
        sb.add(_VERT, 0, 1, 0, 0.12, _scale(grey, 0.7))
        sb.add(_VERT, 0, 1, 0.58, 0.7, (240, 200, 30))
        sb.add(_T, 0, 1, 0, 1, _scale(grey, 1.08))


def _traffic_cone(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
                  size: tuple[float, float, float]) -> None:
    orange, white = (250, 95, 15), (245, 245, 245)
    bands = ((0, 0.07, 0.0, (200, 75, 12)), (0.07, 0.35, 0.12, orange), (0.35, 0.55, 0.2, orange),
             (0.55, 0.68, 0.25, white), (0.68, 0.8, 0.3, orange), (0.8, 0.9, 0.35, white),
             (0.9, 1.0, 0.4, orange))
    for v0, v1, inset, col in bands:
        sb.add(_VERT, inset, 1 - inset, v0, v1, col)
    sb.add(_T, 0.4, 0.6, 0.4, 0.6, orange)


def _pedestrian(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
                size: tuple[float, float, float]) -> None:
    skin, hair = _pick(rng, _SKIN), _pick(rng, ((30, 25, 20), (90, 60, 30), (200, 170, 100), (60, 60, 60)))
    trousers = _jit(rng, _pick(rng, _TROUSERS))
    shirt = _jit(rng, _pick(rng, _SHIRTS))
    if category == "human.pedestrian.construction_worker":
        shirt = _pick(rng, ((255, 140, 20), (215, 240, 40)))
    elif category == "human.pedestrian.police_officer":
        shirt, trousers = (25, 35, 85), (20, 25, 50)
    sb.add(_ENDS, 0.16, 0.46, 0, 0.47, trousers)
    sb.add(_ENDS, 0.54, 0.84, 0, 0.47, trousers)
    sb.add(_SIDES, 0.25, 0.75, 0, 0.47, trousers)
    sb.add(_ENDS, 0.04, 0.96, 0.47, 0.83, shirt)
    sb.add(_SIDES, 0.18, 0.82, 0.47, 0.83, shirt)
    if category == "human.pedestrian.construction_worker":
        sb.add(_VERT, 0.05, 0.95, 0.6, 0.65, (230, 230, 230))
    sb.add(_F, 0.32, 0.68, 0.85, 1.0, skin)
    sb.add(_SIDES, 0.3, 0.7, 0.85, 1.0, skin)
    sb.add(_B, 0.32, 0.68, 0.85, 1.0, hair)
    top = (250, 220, 0) if category == "human.pedestrian.construction_worker" else hair
    sb.add(_VERT, 0.3, 0.7, 0.95, 1.0, top)
    sb.add(_T, 0.3, 0.7, 0.3, 0.7, top)


def _cycle(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
           size: tuple[float, float, float]) -> None:
    """Bicycles and motorcycles: wheels, frame, a rider or a parked saddle."""
    moto = cls == "motorcycle"
    frame = _jit(rng, _pick(rng, ((200, 30, 30), (30, 60, 160), (30, 30, 30), (230, 230, 230), (30, 130, 60))))
    wh = min(0.95, 0.7 / size[2]) if not moto else min(0.95, 0.65 / size[2])
    sb.add(_SIDES, 0.0, 0.36, 0, wh, _TYRE)
    sb.add(_SIDES, 0.64, 1.0, 0, wh, _TYRE)
    sb.add(_SIDES, 0.09, 0.27, wh * 0.3, wh * 0.7, (150, 150, 150))
    sb.add(_SIDES, 0.73, 0.91, wh * 0.3, wh * 0.7, (150, 150, 150))
    if moto:
        sb.add(_SIDES, 0.22, 0.82, wh * 0.6, min(1.0, wh * 1.35), frame)
        sb.add(_ENDS, 0.15, 0.85, wh * 0.6, min(1.0, wh * 1.35), frame)
    else:
        sb.add(_SIDES, 0.2, 0.8, wh * 0.8, wh * 0.95, frame)
        sb.add(_SIDES, 0.72, 0.78, wh * 0.8, min(1.0, wh * 1.3), frame)
    sb.add(_ENDS, 0.38, 0.62, 0, wh, _TYRE)
    sb.add(_ENDS, 0.05, 0.95, min(0.97, wh * 1.25), min(1.0, wh * 1.33), _DARK)
    if _pick(rng, (0, 1)) and moto:
        sb.add(_F, 0.4, 0.6, wh * 0.9, wh * 1.1, (240, 235, 200))
    if rider:
        shirt, trousers = _jit(rng, _pick(rng, _SHIRTS)), _jit(rng, _pick(rng, _TROUSERS))
        head = _pick(rng, _SKIN) if not moto else _pick(rng, ((20, 20, 20), (230, 230, 230), (200, 30, 30)))
        sb.add(_SIDES, 0.38, 0.6, wh * 0.75, 0.6, trousers)
        sb.add(_SIDES, 0.3, 0.66, 0.58, 0.86, shirt)
        sb.add(_SIDES, 0.4, 0.6, 0.87, 1.0, head)
        sb.add(_ENDS, 0.1, 0.9, 0.58, 0.86, shirt)
        sb.add(_ENDS, 0.3, 0.7, 0.87, 1.0, head)
        sb.add(_T, 0.3, 0.65, 0.2, 0.8, shirt)
    else:
        sb.add(_T, 0.1, 0.9, 0.42, 0.58, frame)


def _bin(sb: _StyleBuilder, cls: str, category: str, rng: np.random.Generator, rider: bool,
         size: tuple[float, float, float]) -> None:
    col = _jit(rng, _pick(rng, ((40, 90, 50), (60, 60, 65), (30, 60, 120))))
    sb.add(_VERT, 0, 1, 0, 0.9, col)
    sb.add(_VERT, 0, 1, 0.9, 1, _scale(col, 0.7))
    sb.add(_T, 0, 1, 0, 1, _scale(col, 0.7))


_STYLES = {"car": _car, "truck": _truck, "bus": _bus, "trailer": _trailer,
           "construction_vehicle": _construction_vehicle, "barrier": _barrier, "traffic_cone": _traffic_cone,
           "pedestrian": _pedestrian, "bicycle": _cycle, "motorcycle": _cycle, "bin": _bin}


def _style(cls: str, category: str, rng: np.random.Generator, rider: bool, size: tuple[float, float, float]
           ) -> np.ndarray:
    """Textured face rectangles for one object of class `cls` (what makes classes look different)."""
    if cls not in _STYLES:
        raise ValueError(f"no style for class {cls!r}")
    sb = _StyleBuilder()
    _STYLES[cls](sb, cls, category, rng, rider, size)
    return sb.array()


def _clutter_style(kind: str, rng: np.random.Generator, size: tuple[float, float, float]) -> np.ndarray:
    """Textured faces of buildings, poles and trees (static scene clutter)."""
    sb = _StyleBuilder()
    if kind == "building":
        wall = _jit(rng, _pick(rng, ((190, 170, 140), (160, 80, 60), (200, 200, 195), (120, 120, 125),
                                     (210, 190, 160), (140, 150, 170))), 0.1)
        glass = _jit(rng, (70, 90, 110), 0.15)
        sb.add(_VERT, 0, 1, 0, 1, wall)
        h = size[2]
        floors = max(1, int(h // 3.2))
        for k in range(floors):
            v0, v1 = (k * 3.2 + 1.0) / h, min((k * 3.2 + 2.5) / h, 0.97)
            if v1 > v0:
                sb.add(_VERT, 0.04, 0.96, v0, v1, glass)
        sb.add(_T, 0, 1, 0, 1, (110, 110, 115))
    elif kind == "pole":
        sb.add(_VERT, 0, 1, 0, 0.97, (120, 122, 128))
        sb.add(_VERT, 0, 1, 0.97, 1, (250, 240, 180))
        sb.add(_T, 0, 1, 0, 1, (120, 122, 128))
    elif kind == "trunk":
        sb.add(_VERT, 0, 1, 0, 1, _jit(rng, (95, 70, 45)))
    elif kind == "canopy":
        g = _jit(rng, (55, 110, 45), 0.15)
        sb.add(_VERT, 0, 1, 0, 1, g)
        sb.add(_VERT, 0, 1, 0.35, 0.7, _scale(g, 0.85))
        sb.add((_T, _D), 0, 1, 0, 1, _scale(g, 0.9))
    else:
        raise ValueError(f"no style for clutter {kind!r}")
    return sb.array()
