"""``jray start``, ``jray status`` and ``jray stop``: clusters across machines.

::

    jray start --head [--port 6380] [--bind ADDR] [--num-cpus N] [--num-gpus N]
                      [--resources JSON] [--object-store-memory SIZE]
                      [--secret-file PATH] [--block]
    jray start --address HOST:PORT --secret-file PATH [--num-cpus N ...] [--block]
    jray status [--address HOST:PORT] [--secret-file PATH] [--json]
    jray stop

Every bad option exits with status 2 and a message naming it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import time
from typing import Any

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1000**2, "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """``2G``, ``512MiB``, ``1.5gb`` or a number of bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (a number of bytes, or with a unit: 512M, 2G, 1.5GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _resources(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({exc})") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and v >= 0 for k, v in value.items()):
        raise argparse.ArgumentTypeError(
            f"{text!r} must be a JSON object of resource names to numbers >= 0, "
            f'e.g. \'{{"accelerator": 2}}\'')
    if "CPU" in value or "GPU" in value:
        raise argparse.ArgumentTypeError("give CPU and GPU with --num-cpus / --num-gpus")
    return {k: float(v) for k, v in value.items()}


def _count(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} is not in 1-65535")
    return value


def add_commands(sub: Any) -> None:
    from jray._private.net.endpoints import DEFAULT_PORT

    start = sub.add_parser("start", help="start a head (--head) or a node joining one "
                           "(--address HOST:PORT) on this machine")
    start.add_argument("--head", action="store_true", help="start a head and a node")
    start.add_argument("--address", help="HOST:PORT of the head to join")
    start.add_argument("--port", type=_port, default=DEFAULT_PORT,
                       help=f"the head's TCP port (default {DEFAULT_PORT})")
    start.add_argument("--bind", default="127.0.0.1",
                       help="interface the head listens on (default 127.0.0.1, loopback "
                            "only; 0.0.0.0 for every interface)")
    start.add_argument("--num-cpus", type=_count, default=None)
    start.add_argument("--num-gpus", type=_count, default=None)
    start.add_argument("--resources", type=_resources, default={},
                       help='custom resources as JSON, e.g. \'{"accelerator": 2}\'')
    start.add_argument("--object-store-memory", type=parse_size, default=None,
                       help="shared memory for objects (512M, 2G; default 30%% of RAM)")
    start.add_argument("--secret-file", default=None,
                       help="the cluster secret: written here (mode 0600) with --head, "
                            "read from here when joining (default: $JRAY_SECRET_FILE, "
                            "else the user's runtime directory)")
    start.add_argument("--block", action="store_true",
                       help="stay in the foreground; SIGTERM or Ctrl-C stops everything")
    start.set_defaults(fn=lambda ns, extra: _start(ns))
    status = sub.add_parser("status", help="nodes, resources, tasks and store of a cluster")
    status.add_argument("--address", default=None,
                        help="HOST:PORT of the head (default: the one started here)")
    status.add_argument("--secret-file", default=None)
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument("--timeout", type=_count, default=10.0,
                        help="seconds to wait for the head (default 10)")
    status.set_defaults(fn=lambda ns, extra: _status(ns))
    stop = sub.add_parser("stop", help="stop what jray start started on this machine")
    stop.set_defaults(fn=lambda ns, extra: _stop())


def _fail(msg: str) -> int:
    print(f"jray: {msg}", file=sys.stderr)
    return 2


def _start(ns: argparse.Namespace) -> int:
    from jray._private import api
    from jray._private.net import launch

    if ns.head == bool(ns.address):
        return _fail("jray start: give either --head or --address HOST:PORT")
    cpus = float(os.cpu_count() or 1) if ns.num_cpus is None else ns.num_cpus
    gpus = float(api._detect_gpus()) if ns.num_gpus is None else ns.num_gpus
    total = {k: v for k, v in {"CPU": cpus, "GPU": gpus, **ns.resources}.items() if v > 0}
    store = ns.object_store_memory
    if store is None:
        import psutil

        store = int(psutil.virtual_memory().total * 0.3)
    try:
        rec, procs = launch.start(
            head=ns.head, address=ns.address, port=ns.port, bind=ns.bind, resources=total,
            num_workers=max(1, int(cpus)), object_store_memory=store,
            secret_file=ns.secret_file, block=ns.block)
    except launch.LaunchError as exc:
        return _fail(str(exc))
    what = "head and node" if ns.head else "node"
    print(f"jray: started a {what} ({', '.join(f'{k}={v:g}' for k, v in total.items())})")
    if ns.head:
        print(f"  join another machine:  jray start --address {rec.head_address} "
              f"--secret-file {rec.secret_file}")
        print(f"  connect a notebook:    jray.init(address=\"{rec.head_address}\") "
              f"with JRAY_SECRET_FILE={rec.secret_file}")
        print(f"                         (%jray init --address {rec.head_address})")
    print(f"  secret file:           {rec.secret_file}")
    print("  stop:                  jray stop")
    sys.stdout.flush()
    if not ns.block:
        return 0
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        launch.stop_procs(procs)
        launch.forget(rec)
    return 0


def _secret_for(ns: argparse.Namespace, address: str | None) -> tuple[str, bytes]:
    from jray._private.net import auth, launch

    rec = launch.find(address)
    if address is None:
        if rec is None:
            raise launch.LaunchError("no cluster was started on this machine; give "
                                     "--address HOST:PORT")
        address = rec.head_address
    path = ns.secret_file or os.environ.get("JRAY_SECRET_FILE") or (
        rec.secret_file if rec is not None else launch.default_secret_file())
    try:
        return address, auth.read_secret_file(path)
    except auth.AuthError as exc:
        raise launch.LaunchError(f"{exc} (give --secret-file PATH)") from None


def _status(ns: argparse.Namespace) -> int:
    from jray._private.net import endpoints, launch, probe

    try:
        address, secret = _secret_for(ns, ns.address)
        host, port = endpoints.parse_host_port(address, "--address")
    except (launch.LaunchError, ValueError) as exc:
        return _fail(str(exc))
    addr = endpoints.tcp_address(host, port)
    why = probe.handshake(addr, secret, ns.timeout)
    if why:
        return _fail(f"the head at {address} {why}")
    try:
        doc = {kind: probe.query(addr, secret, kind, None, max(ns.timeout, 1.0)) for kind in (
            "nodes", "cluster_resources", "available_resources", "summary", "store")}
    except probe.QueryError as exc:
        return _fail(str(exc))
    doc["address"] = address
    if ns.json:
        print(json.dumps(doc, indent=1, default=str))
        return 0
    print(f"jray cluster at {address}")
    for n in doc["nodes"]:
        print(f"  node {n['NodeID']} on {n['NodeManagerHostname']}: "
              f"{'alive' if n['Alive'] else 'DEAD'}, {n.get('Workers', 0)} workers")
    total, avail = doc["cluster_resources"], doc["available_resources"]
    for name in sorted(total):
        print(f"  {name}: {total[name] - avail.get(name, 0.0):g} / {total[name]:g} used")
    tasks = doc["summary"].get("tasks", {})
    print("  tasks: " + (", ".join(f"{k} {v}" for k, v in sorted(tasks.items())) or "none"))
    for node_id, st in doc["store"].items():
        pulled = (f", {st['copies']} copies of other machines' objects "
                  f"({st['pulls']} pulls, {st['pulled_bytes'] / (1 << 20):,.1f} MiB)"
                  if st.get("pulls") else "")
        print(f"  store {node_id}: {st['used'] / (1 << 20):,.1f} / "
              f"{st['capacity'] / (1 << 20):,.1f} MiB used{pulled}")
    return 0


def _stop() -> int:
    from jray._private.net import launch

    stopped = launch.stop_recorded()
    print(f"jray: stopped {len(stopped)} start(s) of this machine" if stopped else
          "jray: nothing started by jray start runs on this machine")
    return 0
