"""Resource accounting for one node: CPU, GPU (with device ids) and custom resources.

Pure bookkeeping, no I/O. A *demand* is a dict such as ``{"CPU": 1, "GPU": 1}``.
``acquire`` never checks feasibility twice: callers ask ``can_acquire`` first.
``force_acquire`` may drive availability below zero; that is how a worker that
wakes up from a blocking ``get`` takes its CPU back (as Ray does).
"""

from __future__ import annotations

import math

Demand = dict[str, float]
Shape = tuple[tuple[str, float], ...]
_EPS = 1e-9
#: quantities are kept to this many decimals (Ray's granularity of 0.0001), so that
#: taking and giving back fractions leaves no float drift (1.9999999999999998)
_DIGITS = 4


def shape_of(demand: Demand) -> Shape:
    return tuple(sorted(demand.items()))


def validate_demand(demand: dict[str, object], where: str) -> Demand:
    """Check resource quantities; raise ValueError naming the culprit."""
    out: Demand = {}
    for name, qty in demand.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: resource names must be non-empty strings, got {name!r}")
        if isinstance(qty, bool) or not isinstance(qty, (int, float)) or not math.isfinite(qty):
            raise ValueError(
                f"{where}: resource {name!r} must be a number, not inf or nan, got {qty!r}")
        if qty < 0:
            raise ValueError(f"{where}: resource {name!r} must be >= 0, got {qty}")
        check_precision(where, name, qty)
        if name == "GPU" and qty > 1 and qty != int(qty):
            raise ValueError(f"{where}: num_gpus above 1 must be a whole number, got {qty}")
        if qty > 0:
            out[name] = float(qty)
    return out


def check_precision(where: str, name: str, qty: float) -> None:
    """Quantities are kept to 0.0001 (``_DIGITS``): a finer one is refused, in Ray's words."""
    if abs(round(qty, _DIGITS) - qty) > 1e-12:
        raise ValueError(f"{where}: The precision of the fractional quantity of resource "
                         f"{name} cannot go beyond 0.0001 (got {qty})")


class NodeResources:
    """Totals and availability of one node's resources."""

    __slots__ = ("total", "available", "gpu_free")

    def __init__(self, total: Demand) -> None:
        self.total = {k: float(v) for k, v in total.items() if v > 0}
        self.available = dict(self.total)
        # Fractional GPU sharing: each device id maps to its free fraction.
        self.gpu_free = {i: 1.0 for i in range(int(self.total.get("GPU", 0)))}

    def missing(self, demand: Demand) -> Demand:
        """Quantities of ``demand`` that exceed this node's *totals*."""
        return {k: v for k, v in demand.items() if self.total.get(k, 0.0) + _EPS < v}

    def can_acquire(self, demand: Demand) -> bool:
        avail = self.available
        for k, v in demand.items():
            if avail.get(k, 0.0) + _EPS < v:
                return False
        gpus = demand.get("GPU", 0.0)
        return gpus == 0.0 or self._pick_gpus(gpus) is not None

    def _pick_gpus(self, gpus: float) -> list[int] | None:
        if gpus >= 1:
            ids = [i for i, f in self.gpu_free.items() if f >= 1.0 - _EPS]
            return ids[: int(gpus)] if len(ids) >= int(gpus) else None
        for i, f in self.gpu_free.items():
            if f + _EPS >= gpus:
                return [i]
        return None

    def acquire(self, demand: Demand) -> list[int]:
        """Take ``demand``; return the GPU device ids assigned (maybe empty)."""
        avail = self.available
        for k, v in demand.items():
            avail[k] = round(avail.get(k, 0.0) - v, _DIGITS)
        gpus = demand.get("GPU", 0.0)
        if not gpus:
            return []
        ids = self._pick_gpus(gpus) or []
        share = 1.0 if gpus >= 1 else gpus
        for i in ids:
            self.gpu_free[i] = round(self.gpu_free[i] - share, _DIGITS)
        return ids

    def force_acquire(self, demand: Demand, gpu_ids: list[int]) -> None:
        self._add(demand, gpu_ids, -1.0)

    def release(self, demand: Demand, gpu_ids: list[int]) -> None:
        self._add(demand, gpu_ids, 1.0)

    def _add(self, demand: Demand, gpu_ids: list[int], sign: float) -> None:
        avail = self.available
        for k, v in demand.items():
            avail[k] = round(avail.get(k, 0.0) + sign * v, _DIGITS)
        share = 1.0 if demand.get("GPU", 0.0) >= 1 else demand.get("GPU", 0.0)
        for i in gpu_ids:
            self.gpu_free[i] = round(self.gpu_free[i] + sign * share, _DIGITS)
