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


#: resources whose units are devices with ids (Ray's accelerator names). A holder of
#: some gets their ids in one list of ints: GPU ids as they are, the others as
#: ``kind << DEVICE_SHIFT | id`` (``device_ids`` splits them by name)
DEVICES = ("GPU", "neuron_cores", "TPU", "NPU", "HPU")
DEVICE_SHIFT = 16


def device_ids(ids: list[int]) -> dict[str, list[int]]:
    """The device ids of a holder, by resource name (GPU first)."""
    out: dict[str, list[int]] = {}
    for i in ids:
        out.setdefault(DEVICES[i >> DEVICE_SHIFT], []).append(i & ((1 << DEVICE_SHIFT) - 1))
    return out


#: the variable that shows a process its devices of each kind (Ray's names)
DEVICE_ENV = {"GPU": "CUDA_VISIBLE_DEVICES", "neuron_cores": "NEURON_RT_VISIBLE_CORES",
              "TPU": "TPU_VISIBLE_CHIPS", "NPU": "ASCEND_RT_VISIBLE_DEVICES",
              "HPU": "HABANA_VISIBLE_MODULES"}


def hidden_devices(resources: dict[str, float]) -> list[str]:
    """The variables a process holding none of a node's devices sees empty (as in Ray,
    a task that asks for no GPU on a GPU node sees ``CUDA_VISIBLE_DEVICES=""``)."""
    return [var for kind, var in DEVICE_ENV.items() if resources.get(kind, 0) > 0]


def device_env(ids: list[int], base: dict[str, str]) -> dict[str, str]:
    """The environment variables that show a holder of ``ids`` its devices. ``base``:
    the node's own values: an id indexes the entries listed there (device ids or
    UUIDs, as in Ray), else stands for itself."""
    out: dict[str, str] = {}
    for kind, own in device_ids(ids).items():
        var = DEVICE_ENV[kind]
        listed = [d.strip() for d in base.get(var, "").split(",") if d.strip()]
        out[var] = ",".join(listed[i] if i < len(listed) else str(i) for i in own)
    return out


class NodeResources:
    """Totals and availability of one node's resources."""

    __slots__ = ("total", "available", "free")

    def __init__(self, total: Demand) -> None:
        self.total = {k: float(v) for k, v in total.items() if v > 0}
        self.available = dict(self.total)
        # Fractional sharing of devices: each device's id maps to its free fraction.
        self.free = {kind: {i: 1.0 for i in range(int(self.total[kind]))}
                     for kind in DEVICES if self.total.get(kind, 0) >= 1}

    @property
    def gpu_free(self) -> dict[int, float]:
        return self.free.get("GPU", {})

    def missing(self, demand: Demand) -> Demand:
        """Quantities of ``demand`` that exceed this node's *totals*."""
        return {k: v for k, v in demand.items() if self.total.get(k, 0.0) + _EPS < v}

    def can_acquire(self, demand: Demand) -> bool:
        avail = self.available
        for k, v in demand.items():
            if avail.get(k, 0.0) + _EPS < v:
                return False
        free = self.free
        return not free or all(self._pick(kind, demand[kind]) is not None
                               for kind in free if demand.get(kind))

    def _pick(self, kind: str, qty: float) -> list[int] | None:
        free = self.free[kind]
        if qty >= 1:
            ids = [i for i, f in free.items() if f >= 1.0 - _EPS]
            return ids[: int(qty)] if len(ids) >= int(qty) else None
        for i, f in free.items():
            if f + _EPS >= qty:
                return [i]
        return None

    def acquire(self, demand: Demand) -> list[int]:
        """Take ``demand``; return the device ids assigned (maybe empty; ``device_ids``)."""
        avail = self.available
        for k, v in demand.items():
            avail[k] = round(avail.get(k, 0.0) - v, _DIGITS)
        if not self.free:
            return []
        out: list[int] = []
        for kind, free in self.free.items():
            qty = demand.get(kind, 0.0)
            if not qty:
                continue
            share = 1.0 if qty >= 1 else qty
            tag = DEVICES.index(kind) << DEVICE_SHIFT
            for i in self._pick(kind, qty) or []:
                free[i] = round(free[i] - share, _DIGITS)
                out.append(tag | i)
        return out

    def force_acquire(self, demand: Demand, gpu_ids: list[int]) -> None:
        self._add(demand, gpu_ids, -1.0)

    def release(self, demand: Demand, gpu_ids: list[int]) -> None:
        self._add(demand, gpu_ids, 1.0)

    def _add(self, demand: Demand, ids: list[int], sign: float) -> None:
        avail = self.available
        for k, v in demand.items():
            avail[k] = round(avail.get(k, 0.0) + sign * v, _DIGITS)
        for kind, own in device_ids(ids).items():
            qty = demand.get(kind, 0.0)
            share = 1.0 if qty >= 1 else qty
            free = self.free[kind]
            for i in own:
                free[i] = round(free[i] + sign * share, _DIGITS)
