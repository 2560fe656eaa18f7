"""Arguments of ``%jray`` and ``%%remote``: parsing and checks, no kernel needed.

Every problem raises IPython's ``UsageError`` naming the option (the cell then
fails, so "Run All" stops there): unknown options, values of the wrong type,
and values that make no sense (``--retries -1``, ``%jray engines -3``).
``check_placeable`` rejects a demand that no node of the cluster can meet.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from typing import Any

from IPython.core.error import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().rstrip()}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise UsageError(message or self.format_usage())

    def print_help(self, file: Any = None) -> None:
        raise UsageError(self.format_help())


def _count(text: str) -> float:
    """A resource quantity: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _int_at_least(lowest: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {lowest}, got {value}")
        return value

    parse.__name__ = f"int >= {lowest}"
    return parse


def _json(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({e.msg} at column {e.colno}): {text!r}; "
            "expected an object such as '{\"accel\": 1}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"accel\": 1}'")
    for name, qty in value.items():
        if isinstance(qty, bool) or not isinstance(qty, (int, float)) or not math.isfinite(qty) \
                or qty < 0:
            raise argparse.ArgumentTypeError(
                f"resource {name!r} must be a number >= 0, got {qty!r}")
        if name in ("CPU", "GPU"):
            raise argparse.ArgumentTypeError(
                f"give {name} with --num-{name.lower()}s, not in --resources")
    return value


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    try:
        value = int(float(t[:-1] if t[-1:] in units else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 2G or 500M, got {text!r}") \
            from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a size > 0, got {text!r}")
    return value


def _resources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-cpus", type=_count, metavar="N")
    p.add_argument("--num-gpus", type=_count, metavar="N")
    p.add_argument("--resources", type=_json, metavar="JSON")


def line_parser() -> _Parser:
    p = _Parser(prog="%jray", add_help=False)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    init = sub.add_parser("init", help="start (or report) the local cluster")
    init.add_argument("--num-cpus", type=_int_at_least(1), metavar="N")
    init.add_argument("--num-gpus", type=_int_at_least(0), metavar="N")
    init.add_argument("--resources", type=_json, metavar="JSON")
    init.add_argument("--object-store-memory", type=_size, metavar="SIZE")
    init.add_argument("--address", help="join the running cluster there (never stopped)")
    init.add_argument("--backend", choices=("jray", "ray"),
                      help="run the magics on jray's cluster (default) or on Ray")
    start = sub.add_parser("start", help="node daemons on other machines over SSH")
    start.add_argument("--ssh", required=True, metavar="USER@HOST[,USER@HOST...]")
    start.add_argument("--num-cpus", type=_count, metavar="N")
    start.add_argument("--python", default="python3", metavar="PY")
    sub.add_parser("status", help="cluster summary")
    sub.add_parser("dashboard", help="a live view of the cluster (jray.dashboard())")
    sub.add_parser("shutdown", help="stop the cluster")
    eng = sub.add_parser("engines", help="start N engines, or list them")
    eng.add_argument("n", type=_int_at_least(1), nargs="?", metavar="N")
    _resources(eng)
    for cmd in ("push", "pull"):
        sp = sub.add_parser(cmd, help=f"{cmd} variables (comma-separated) to/from an engine")
        sp.add_argument("engine")
        sp.add_argument("names")
        if cmd == "pull":
            sp.add_argument("--zero-copy", action="store_true")
    res = sub.add_parser("result", help="the last value of a --no-block cell, by its label")
    res.add_argument("label")
    return p


def cell_parser() -> _Parser:
    p = _Parser(prog="%%remote", add_help=False)
    _resources(p)
    p.add_argument("--no-block", action="store_true")
    p.add_argument("--zero-copy", action="store_true")
    p.add_argument("--name", metavar="LABEL")
    p.add_argument("--in", dest="inputs", metavar="a,b")
    p.add_argument("--out", dest="outputs", metavar="x,y")
    p.add_argument("--retries", type=_int_at_least(0), default=0, metavar="N")
    p.add_argument("--retry-exceptions", action="store_true")
    p.add_argument("--progress-after", type=_count, default=1.0, metavar="SECONDS")
    p.add_argument("--no-progress", action="store_true")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--engine", metavar="NAME")
    where.add_argument("--engines", choices=["all"])
    where.add_argument("--targets", metavar="0,2|1:3|all")
    return p


def parse(parser: _Parser, line: str) -> argparse.Namespace:
    """``line`` split like a shell and parsed; ``UsageError`` naming what is wrong."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise UsageError(f"{parser.prog}: cannot split the options ({e}): {line!r}") from None
    return parser.parse_args(words)


def names(text: str | None, option: str) -> tuple[str, ...] | None:
    """``a, b`` -> ``("a", "b")``; each must be an identifier."""
    if text is None:
        return None
    out = tuple(n.strip() for n in text.split(",") if n.strip())
    for n in out:
        if not n.isidentifier():
            raise UsageError(f"{option}: {n!r} is not a variable name")
    return out


def demand(args: argparse.Namespace, default_cpus: float) -> dict[str, float]:
    """The resources a cell or engine asks for (``CPU``/``GPU``/custom names)."""
    out = {"CPU": default_cpus if args.num_cpus is None else args.num_cpus}
    if args.num_gpus:
        out["GPU"] = args.num_gpus
    out.update({k: float(v) for k, v in (args.resources or {}).items()})
    return {k: v for k, v in out.items() if v > 0}


def _option(resource: str) -> str:
    return {"CPU": "--num-cpus", "GPU": "--num-gpus"}.get(resource, "--resources")


def check_placeable(where: str, need: dict[str, float], nodes: list[dict[str, Any]],
                    count: int = 1) -> None:
    """Raise ``UsageError`` unless one node holds ``need`` (``count`` times over, in total).

    ``nodes`` are ``jray.nodes()`` rows. The message names the missing resource
    and what the cluster has.
    """
    alive = [n for n in nodes if n.get("Alive", True)]
    totals = [dict(n.get("Resources", {})) for n in alive]
    have = {k: sum(t.get(k, 0.0) for t in totals) for t in totals for k in t}
    cluster = ", ".join(f"{v:g} {k}" for k, v in sorted(have.items())) or "no resources"
    for name, qty in need.items():
        best = max((t.get(name, 0.0) for t in totals), default=0.0)
        if best < qty:
            has = f"no node has any {name}" if best == 0 else f"the largest node has {best:g}"
            raise UsageError(f"{where} {_option(name)}: needs {qty:g} {name} but {has} "
                             f"(cluster: {cluster})")
        if count > 1 and have.get(name, 0.0) < qty * count:
            raise UsageError(
                f"{where} {_option(name)}: {count} engines need {qty * count:g} {name} in all "
                f"({qty:g} each) but the cluster has {have.get(name, 0.0):g} (cluster: {cluster})")
