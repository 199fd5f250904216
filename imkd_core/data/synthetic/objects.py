"""What lives along the road: `_Obj` (one annotated object and its trajectory in road
coordinates) and `_Spawner`, which places every object of a scene without overlaps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imkd_core.data.synthetic.config import _BIKE_W, _CLASS_SPEC, _FOLLOW, _LANE, _LANE_W, _PARK_W, _STATIC

if TYPE_CHECKING:
    from imkd_core.data.synthetic.world import _EgoMotion


@dataclass
class _Obj:
    """One annotated object: class, nuScenes category, size and a trajectory in road coordinates."""

    cls: str
    category: str
    size: tuple[float, float, float]  # l, w, h
    mode: int = _STATIC
    s0: float = 0.0       # static/lane: arc length at t = 0; follow: gap to the ego (centre)
    d: float = 0.0        # lateral offset
    v: float = 0.0        # lane mode speed along the lane (m/s)
    tau: float = 0.0      # follow mode: time shift of the ego profile (s)
    reverse: bool = False  # drives towards -s
    yaw_off: float = 0.0
    parked: bool = False
    rider: bool = False
    sitting: bool = False


def _size(rng: np.random.Generator, cls: str, scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
          ) -> tuple[float, float, float]:
    spec = _CLASS_SPEC[cls]
    jit = np.clip(rng.normal(0.0, spec["jit"], 3), -2.5 * spec["jit"], 2.5 * spec["jit"])
    return tuple(round(float(m * s * (1 + j)), 3) for m, s, j in zip(spec["size"], scale, jit))  # type: ignore


class _Spawner:
    """Places all objects of a scene along the road without overlaps (per-band occupancy)."""

    def __init__(self, rng: np.random.Generator, lanes: int, sidewalk: float, s_range: tuple[float, float],
                 span: tuple[float, float], ego: _EgoMotion, t_end: float):
        self.rng, self.lanes, self.sw = rng, lanes, sidewalk
        self.lo, self.hi = s_range     # static objects live here
        self.S0, self.S1 = span        # ego arc-length span over the scene
        self.ego, self.t_end = ego, t_end
        self.o_lane = lanes * _LANE_W             # outer edge of the traffic lanes
        self.o_park = self.o_lane + _BIKE_W + _PARK_W / 2
        self.o_kerb = self.o_lane + _BIKE_W + _PARK_W
        self.objs: list[_Obj] = []
        self.occ: dict[int, list[tuple[float, float]]] = {-1: [], 1: []}  # parking+bike band per side
        self.occ_walk: dict[int, list[tuple[float, float]]] = {-1: [], 1: []}  # outer sidewalk band

    # -- helpers
    def free(self, side: int, lo: float, hi: float, band: str = "park") -> bool:
        occ = self.occ if band == "park" else self.occ_walk
        return all(hi <= a or lo >= b for a, b in occ[side])

    def take(self, side: int, lo: float, hi: float, band: str = "park") -> None:
        (self.occ if band == "park" else self.occ_walk)[side].append((lo, hi))

    def add(self, cls: str, category: str, size: tuple[float, float, float] | None = None, **kw: Any) -> _Obj:
        o = _Obj(cls=cls, category=category, size=size or _size(self.rng, cls), **kw)
        self.objs.append(o)
        return o

    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def facing_road(self, side: int) -> float:
        """Yaw offset of a person standing or sitting beside the road on `side` (+1 left): facing
        the road, give or take 35 degrees (waiting, watching traffic, on a bench). A random yaw
        would make a still person's heading unlearnable from any sensor."""
        return -side * np.pi / 2 + self.u(-0.6, 0.6)

    def vehicle(self, kind: str) -> list[tuple[str, str, tuple[float, float, float], bool]]:
        """A vehicle unit (front to back): kind 'truck_trailer' is a truck hauling a trailer."""
        if kind == "truck_trailer":
            return [("truck", "vehicle.truck", _size(self.rng, "truck", (0.9, 1.0, 1.0)), False),
                    ("trailer", "vehicle.trailer", _size(self.rng, "trailer"), False)]
        if kind == "motorcycle":
            return [("motorcycle", "vehicle.motorcycle", _size(self.rng, "motorcycle"), True)]
        cat = {"car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid",
               "trailer": "vehicle.trailer", "construction_vehicle": "vehicle.construction"}[kind]
        return [(kind, cat, _size(self.rng, kind), False)]

    def traffic_kind(self) -> str:
        return str(self.rng.choice(["car", "truck", "bus", "motorcycle", "truck_trailer"],
                                   p=[0.68, 0.11, 0.08, 0.07, 0.06]))

    # -- placement
    def construction_zones(self, side: int) -> None:
        n = 1 + int(self.rng.random() < 0.2)
        for z in range(n):
            for _ in range(20):
                length = self.u(16, 30)
                if z == 0:
                    c = self.S0 + (self.S1 - self.S0) * self.u(0.15, 0.85) + self.u(-10, 25)
                else:
                    c = self.u(self.lo + 30, self.hi - 30)
                z0, z1 = c - length / 2, c + length / 2
                if self.free(side, z0 - 16, z1 + 16):
                    break
            else:
                continue
            self.take(side, z0 - 16, z1 + 16)
            o_bar = self.o_lane + 0.35
            for k in range(int(length // 2.7)):
                self.add("barrier", "movable_object.barrier", s0=z0 + 1.35 + 2.7 * k, d=side * o_bar,
                         yaw_off=np.pi / 2 + self.rng.normal(0, 0.02))
            for j in range(4):
                for s, sgn in ((z0, -1.0), (z1, 1.0)):
                    self.add("traffic_cone", "movable_object.trafficcone", s0=s + sgn * 2.4 * (j + 1),
                             d=side * (o_bar + 0.22 * (j + 1)), yaw_off=self.u(-np.pi, np.pi))
            ncv = 1 + int(self.rng.random() < 0.6)
            cv_spans = []
            for k in range(ncv):
                size = _size(self.rng, "construction_vehicle")
                s = z0 + (k + 0.5) * length / ncv + self.u(-2, 2)
                cv_spans.append((s - size[0] / 2 - 1.0, s + size[0] / 2 + 1.0))
                self.add("construction_vehicle", "vehicle.construction", size=size, s0=s,
                         d=side * (self.o_lane + 2.45), yaw_off=self.u(-0.2, 0.2) + (np.pi if k % 2 else 0.0),
                         parked=self.rng.random() < 0.7)
            for _ in range(int(self.rng.integers(1, 4))):
                s = self.u(z0 + 1, z1 - 1)
                if any(a < s < b for a, b in cv_spans):
                    continue
                self.add("pedestrian", "human.pedestrian.construction_worker",
                         s0=s, d=side * (self.o_lane + self.u(1.1, 3.6)), yaw_off=self.facing_road(side))

    def parked_unit(self, side: int, kind: str, s_front: float, parked: bool = True) -> float:
        """Park a vehicle unit with its front at s_front (in traffic direction); return its length."""
        unit = self.vehicle(kind)
        total = sum(u[2][0] for u in unit) + 0.8 * (len(unit) - 1)
        sgn = -1.0 if side > 0 else 1.0  # left side faces -s
        pos = s_front
        for cls, cat, size, _ in unit:
            c = pos - sgn * size[0] / 2
            self.add(cls, cat, size=size, s0=c, d=side * (self.o_park + self.rng.normal(0, 0.08)),
                     reverse=side > 0, yaw_off=self.rng.normal(0, 0.02), parked=parked,
                     rider=False)
            pos -= sgn * (size[0] + 0.8)
        lo, hi = sorted((s_front, s_front - sgn * total))
        self.take(side, lo - 0.5, hi + 0.5)
        return total

    def guaranteed(self, free_side: int) -> None:
        """Rare classes near the ego path in every scene (so every split sees all 10 classes)."""
        for kind, where in (("trailer", self.u(0.1, 0.9)), ("truck", self.u(0.0, 1.0)), ("bus", self.u(0.2, 1.0)),
                            ("motorcycle", self.u(0.0, 1.0)), ("truck_trailer", self.u(0.3, 1.0))):
            for attempt in range(30):
                side = free_side if attempt % 2 == 0 else -free_side
                s = self.S0 + (self.S1 - self.S0) * where + self.u(-25, 25) + attempt * 3
                if self.free(side, s - 22, s + 22):
                    self.parked_unit(side, kind, s, parked=kind != "bus")
                    if kind == "bus":  # a bus stop: people waiting
                        for _ in range(int(self.rng.integers(2, 5))):
                            self.add("pedestrian", "human.pedestrian.adult", s0=s + self.u(-8, 2),
                                     d=side * (self.o_kerb + self.u(1.0, self.sw - 0.5)),
                                     yaw_off=self.facing_road(side))
                    break

    def parking(self, p_park: float) -> None:
        for side in (-1, 1):
            s = self.lo + self.u(0, 8)
            while s < self.hi:
                kind = str(self.rng.choice(["car", "truck", "trailer", "motorcycle", "bus", "construction_vehicle"],
                                           p=[0.8, 0.08, 0.03, 0.06, 0.02, 0.01]))
                length = {"car": 4.7, "truck": 7.2, "trailer": 12.5, "motorcycle": 2.2, "bus": 11.0,
                          "construction_vehicle": 6.6}[kind] + 1.0
                if self.rng.random() < p_park and self.free(side, s, s + length + 1.0):
                    front = s + length if side < 0 else s
                    total = self.parked_unit(side, kind, front, parked=True)
                    s += total + self.u(0.8, 3.0)
                else:
                    s += self.u(3.0, 12.0)

    def traffic(self) -> None:
        ego, rng = self.ego, self.rng
        d_ego = -(self.o_lane - _LANE_W / 2)
        # ego lane: vehicles replay the ego profile shifted in time (never collide, queue at stops)
        gap, tau = 3.9, 0.0  # ego front bumper from the ego origin (rear axle)
        for _ in range(int(rng.choice([0, 1, 1, 2, 2, 3]))):
            tau += self.u(0.8, 2.2)
            gap += self.u(5.0, 14.0)
            for cls, cat, size, rider in self.vehicle(self.traffic_kind())[::-1]:  # rear unit first
                gap += size[0] / 2
                self.add(cls, cat, size=size, mode=_FOLLOW, s0=gap, d=d_ego + rng.normal(0, 0.1), tau=tau,
                         rider=rider)
                gap += size[0] / 2 + 0.8
        gap, tau = -1.1, 0.0  # ego rear bumper
        for _ in range(int(rng.choice([0, 1, 1, 2]))):
            tau -= self.u(0.8, 2.2)
            gap -= self.u(5.0, 14.0)
            for cls, cat, size, rider in self.vehicle(self.traffic_kind()):
                gap -= size[0] / 2
                self.add(cls, cat, size=size, mode=_FOLLOW, s0=gap, d=d_ego + rng.normal(0, 0.1), tau=tau,
                         rider=rider)
                gap -= size[0] / 2 + 0.8
        # other lanes: constant speed, spread so that some are always around the ego
        t_end = self.t_end
        lanes = [(-(k + 0.5) * _LANE_W, False) for k in range(self.lanes - 1)]
        lanes += [((k + 0.5) * _LANE_W, True) for k in range(self.lanes)]
        for d, rev in lanes:
            v = self.u(5.0, 12.0)
            sgn = -1.0 if rev else 1.0
            ts = np.linspace(0.0, t_end, 8)
            rel = ego.s_at(ts) - sgn * v * ts
            lo, hi = float(rel.min()) - 90.0, float(rel.max()) + 90.0
            s = lo + self.u(0, 20)
            while s < hi:
                unit = self.vehicle(self.traffic_kind())
                pos = s
                for cls, cat, size, rider in unit:  # front unit first, the rest behind it
                    c = pos - sgn * size[0] / 2
                    self.add(cls, cat, size=size, mode=_LANE, s0=c, d=d + rng.normal(0, 0.12), v=v, reverse=rev,
                             rider=rider)
                    pos -= sgn * (size[0] + 0.8)
                s += sum(u[2][0] for u in unit) + self.u(12.0, 45.0)

    def cyclists(self, side: int) -> None:
        """Riders in the bike lane of `side` (which has no construction zone) and parked bikes."""
        rev = side > 0
        sgn = -1.0 if rev else 1.0
        for _ in range(int(self.rng.integers(1, 3))):
            v = self.u(3.0, 6.0)
            tm = self.u(0.2, 0.8) * self.t_end
            s0 = float(self.ego.s_at(tm)) + self.u(-25, 35) - sgn * v * tm
            self.add("bicycle", "vehicle.bicycle", mode=_LANE, s0=s0, d=side * (self.o_lane + _BIKE_W / 2),
                     v=v, reverse=rev, rider=True)
        for _ in range(int(self.rng.integers(1, 3))):  # parked bicycle groups on the outer sidewalk
            sd = int(self.rng.choice([-1, 1]))
            s = self.S0 + (self.S1 - self.S0) * self.u(-0.1, 1.1)
            n = int(self.rng.integers(2, 5))
            if not self.free(sd, s - 1, s + 0.9 * n + 1, "walk"):
                continue
            self.take(sd, s - 1, s + 0.9 * n + 1, "walk")
            for k in range(n):
                self.add("bicycle", "vehicle.bicycle", size=_size(self.rng, "bicycle", (0.97, 0.92, 0.62)),
                         s0=s + 0.9 * k, d=sd * (self.o_kerb + self.sw - 1.0),
                         yaw_off=np.pi / 2 + self.rng.normal(0, 0.08), parked=True)

    def sidewalk_life(self, spacing: float) -> None:
        rng = self.rng
        for side in (-1, 1):
            # walkers (inner band): spread so that some are always near the ego
            for _ in range(int((self.hi - self.lo + 60) / spacing)):
                v = self.u(0.8, 1.7)
                rev = bool(rng.random() < 0.5)
                cat = str(rng.choice(["human.pedestrian.adult", "human.pedestrian.child",
                                      "human.pedestrian.police_officer"], p=[0.88, 0.09, 0.03]))
                size = _size(rng, "pedestrian", (0.75, 0.75, 0.72) if cat.endswith("child") else (1, 1, 1))
                self.add("pedestrian", cat, size=size, mode=_LANE, s0=self.u(self.lo - 30, self.hi + 30),
                         d=side * (self.o_kerb + (1.25 if rev else 0.75) + self.u(0, 0.5)),
                         v=v, reverse=rev)
            # standing / sitting people and bins (outer band)
            for _ in range(int((self.hi - self.lo) / (spacing * 2.5))):
                s = self.u(self.lo, self.hi)
                if not self.free(side, s - 0.6, s + 0.6, "walk"):
                    continue
                self.take(side, s - 0.6, s + 0.6, "walk")
                d = side * (self.o_kerb + self.u(2.4, self.sw - 0.45))
                r = rng.random()
                if r < 0.15:
                    self.add("bin", "movable_object.pushable_pullable", s0=s, d=d, yaw_off=self.u(-0.2, 0.2))
                elif r < 0.27:
                    self.add("pedestrian", "human.pedestrian.adult", size=_size(rng, "pedestrian", (1.2, 1, 0.72)),
                             s0=s, d=d, yaw_off=self.facing_road(side), sitting=True)
                else:
                    self.add("pedestrian", "human.pedestrian.adult", s0=s, d=d, yaw_off=self.facing_road(side))

    def extras(self, zone_side: int) -> None:
        """Cone groups in the bike lane and barrier groups on the sidewalk."""
        for _ in range(int(self.rng.integers(1, 3))):
            s = self.S0 + (self.S1 - self.S0) * self.u(-0.1, 1.1)
            n = int(self.rng.integers(3, 5))
            if not self.free(zone_side, s - 1, s + 3 * n):
                continue
            self.take(zone_side, s - 1, s + 3 * n)
            for k in range(n):
                self.add("traffic_cone", "movable_object.trafficcone", s0=s + 3.0 * k,
                         d=zone_side * (self.o_lane + self.u(0.4, 1.1)), yaw_off=self.u(-np.pi, np.pi))
        for _ in range(int(self.rng.integers(0, 2))):
            side = int(self.rng.choice([-1, 1]))
            s = self.S0 + (self.S1 - self.S0) * self.u(-0.1, 1.1)
            n = int(self.rng.integers(2, 5))
            if not self.free(side, s - 1, s + 2.7 * n + 1, "walk"):
                continue
            self.take(side, s - 1, s + 2.7 * n + 1, "walk")
            for k in range(n):
                self.add("barrier", "movable_object.barrier", s0=s + 1.35 + 2.7 * k,
                         d=side * (self.o_kerb + self.sw - 0.6), yaw_off=np.pi / 2 + self.rng.normal(0, 0.03))
