"""``%jray`` and ``%%remote``: thin magics that parse arguments and call the layers below.

- ``%jray init|status|dashboard|shutdown|engines|push|pull``
- ``%%remote [options]``: the cell as a task (inputs and outputs found by
  ``cell.analyze``), or in engines' namespaces with ``--engine``/``--engines``.

Nothing a magic shows is returned to IPython, so ``Out``/``_`` never hold
remote values: a last expression is published as an ``execute_result`` by
``Router.result`` directly.
"""

from __future__ import annotations

import argparse
import builtins
import itertools
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

import jray
from jray.jupyter import engines as E
from jray.jupyter import status
from jray.jupyter.cell import analyze, default_label
from jray.jupyter.output import CellRun, Router, remote_traceback
from jray.jupyter.progress import wait_for
from jray.jupyter.remote_cell import CellSpec, Unbound, submit


class UsageError(Exception):
    """Bad magic arguments; the message holds the usage."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise UsageError(message or "")

    def print_help(self, file: Any = None) -> None:
        raise UsageError(self.format_help())


def _json(text: str) -> dict[str, float]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"accel\": 1}'")
    return value


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in units else t) * mult)


def _resources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-cpus", type=float)
    p.add_argument("--num-gpus", type=float)
    p.add_argument("--resources", type=_json, metavar="JSON")


def _line_parser() -> _Parser:
    p = _Parser(prog="%jray", add_help=False)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    init = sub.add_parser("init", help="start (or report) the local cluster")
    init.add_argument("--num-cpus", type=int)
    init.add_argument("--num-gpus", type=int)
    init.add_argument("--resources", type=_json, metavar="JSON")
    init.add_argument("--object-store-memory", type=_size, metavar="SIZE")
    init.add_argument("--address")
    sub.add_parser("status", help="cluster summary")
    sub.add_parser("dashboard", help="a live view of the cluster (jray.dashboard())")
    sub.add_parser("shutdown", help="stop the cluster")
    eng = sub.add_parser("engines", help="start N engines, or list them")
    eng.add_argument("n", type=int, nargs="?")
    _resources(eng)
    for cmd in ("push", "pull"):
        sp = sub.add_parser(cmd, help=f"{cmd} variables (comma-separated) to/from an engine")
        sp.add_argument("engine")
        sp.add_argument("names")
    return p


def _cell_parser() -> _Parser:
    p = _Parser(prog="%%remote", add_help=False)
    _resources(p)
    p.add_argument("--no-block", action="store_true")
    p.add_argument("--name", metavar="LABEL")
    p.add_argument("--in", dest="inputs", metavar="a,b")
    p.add_argument("--out", dest="outputs", metavar="x,y")
    p.add_argument("--retries", type=int, default=0)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--engine", metavar="NAME")
    where.add_argument("--engines", choices=["all"])
    return p


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def _clean(exc: BaseException, text: str | None = None) -> BaseException:
    """Make IPython show ``text`` (default: ``Type: message``) instead of our own frames."""
    lines = (text or f"{type(exc).__name__}: {exc}").rstrip("\n").split("\n")
    try:
        exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
    except Exception:
        pass
    return exc


@magics_class
class JrayMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.sh: Any = shell  # IPython types Magics.shell as Optional
        self.router = Router(shell)
        self.engines: dict[str, Any] = {}
        self.started_cluster = False
        self.cells = itertools.count(1)
        self.line_parser = _line_parser()
        self.cell_parser = _cell_parser()

    def _count(self) -> int:
        """The running cell's number (IPython has advanced ``execution_count`` already)."""
        return int(getattr(self.sh.displayhook, "prompt_count", self.sh.execution_count - 1))

    # --- cluster ---------------------------------------------------------------------
    def _address(self, auto: bool) -> str:
        if not jray.is_initialized():
            if not auto:
                raise _clean(RuntimeError("no jray cluster; run %jray init first"))
            info = jray.init()
            self.started_cluster = True
            print(f"jray: started a local cluster ({_fmt(info['resources'])}); "
                  f"%jray init sets its size")
        return str(jray.init(ignore_reinit_error=True).get("address", ""))

    def close(self) -> None:
        """Stop the timer; shut down a cluster this extension started (unload)."""
        self.router.reset()
        if self.started_cluster and jray.is_initialized():
            jray.shutdown()
        self.started_cluster = False
        self.engines.clear()

    # --- %jray -----------------------------------------------------------------------
    @line_magic("jray")  # type: ignore[arg-type]  # IPython's marker is typed for Never
    def jray_line(self, line: str) -> None:
        try:
            args = self.line_parser.parse_args(shlex.split(line))
        except (UsageError, ValueError) as e:
            print(str(e).rstrip() or self.line_parser.format_usage(), file=sys.stderr)
            return
        cmd: Callable[[argparse.Namespace], None] = getattr(self, "_cmd_" + args.cmd)
        cmd(args)

    def _cmd_init(self, a: argparse.Namespace) -> None:
        if jray.is_initialized():
            info = jray.init(ignore_reinit_error=True)
            print(f"jray: a cluster is already running ({_fmt(info.get('resources', {}))}) "
                  f"at {info.get('address')}; %jray shutdown first to change it")
            return
        try:
            info = jray.init(a.address, num_cpus=a.num_cpus, num_gpus=a.num_gpus,
                             resources=a.resources, object_store_memory=a.object_store_memory)
        except (jray.exceptions.JrayError, TypeError, ValueError) as e:
            raise _clean(e) from None
        self.started_cluster = True
        print(f"jray: started a local cluster ({_fmt(info['resources'])}) at {info['address']}")

    def _cmd_status(self, a: argparse.Namespace) -> None:
        if not jray.is_initialized():
            print("jray: no cluster running (%jray init starts one)")
            return
        from IPython.display import display

        display(status.bundle(self.engines), raw=True)  # type: ignore[no-untyped-call]

    def _cmd_dashboard(self, a: argparse.Namespace) -> None:
        self._address(auto=True)
        from IPython.display import display

        display(jray.dashboard())  # type: ignore[no-untyped-call]

    def _cmd_shutdown(self, a: argparse.Namespace) -> None:
        self.router.reset()
        self.engines.clear()
        if not jray.is_initialized():
            print("jray: no cluster running")
            return
        jray.shutdown()
        self.started_cluster = False
        print("jray: cluster shut down")

    def _cmd_engines(self, a: argparse.Namespace) -> None:
        if a.n is not None:
            self._address(auto=True)
            opts = {k: v for k, v in (("num_cpus", a.num_cpus), ("num_gpus", a.num_gpus),
                                      ("resources", a.resources)) if v is not None}
            started = E.start(self.engines, a.n, opts)
            E.describe(self.engines)  # wait until they run: a placement problem shows now
            print(f"jray: started {len(started)} engine(s): {', '.join(started) or '-'}; "
                  f"{len(self.engines)} running")
            return
        if not self.engines:
            print("jray: no engines (%jray engines N starts N)")
            return
        for row in E.describe(self.engines):
            print(f"{row['name']}  pid={row['pid']}  host={row['host']}  "
                  f"variables: {', '.join(row['variables']) or '-'}")

    def _targets(self, name: str) -> dict[str, Any]:
        if not self.engines:
            raise _clean(RuntimeError("no engines running; %jray engines N starts N"))
        if name == "all":
            return dict(self.engines)
        full = E.engine_name(name)
        if full not in self.engines:
            raise _clean(KeyError(f"no engine {name!r}; engines: {', '.join(self.engines)}"))
        return {full: self.engines[full]}

    def _cmd_push(self, a: argparse.Namespace) -> None:
        names = _names(a.names) or ()
        ns = self.sh.user_ns
        for n in names:
            if n not in ns:
                raise _clean(NameError(f"name {n!r} is not defined"))
        targets = self._targets(a.engine)
        jray.get([h.push.remote({n: ns[n] for n in names}) for h in targets.values()])

    def _cmd_pull(self, a: argparse.Namespace) -> None:
        if a.engine == "all":
            raise _clean(ValueError("%jray pull takes one engine, not 'all'"))
        (handle,) = self._targets(a.engine).values()
        try:
            values = jray.get(handle.pull.remote(list(_names(a.names) or ())))
        except Exception as e:
            raise _clean(e, remote_traceback(e).strip().splitlines()[-1]) from None
        self.sh.user_ns.update(values)

    # --- %%remote --------------------------------------------------------------------
    @cell_magic("remote")  # type: ignore[arg-type]  # (same)
    def remote(self, line: str, cell: str) -> None:
        try:
            args = self.cell_parser.parse_args(shlex.split(line))
        except (UsageError, ValueError) as e:
            print(str(e).rstrip(), file=sys.stderr)
            return
        filename = f"<remote-cell-{next(self.cells)}>"
        cell = "\n" + cell  # line numbers as in the notebook, where line 1 is %%remote
        try:
            info = analyze(cell, filename)
        except SyntaxError as e:
            raise _clean(e) from None
        if args.engine or args.engines:
            self._run_engines(args, cell, filename, info.quiet)
        else:
            self._run_task(args, cell, filename, info)

    def _inputs(self, names: tuple[str, ...], bound_in_cell: tuple[str, ...],
                explicit: bool) -> tuple[str, ...]:
        ns = self.sh.user_ns
        out: list[str] = []
        for n in names:
            if n in ns:
                out.append(n)
            elif explicit or (not hasattr(builtins, n) and n not in bound_in_cell):
                raise _clean(NameError(f"name {n!r} is not defined"))
        return tuple(out)

    def _run_task(self, args: argparse.Namespace, cell: str, filename: str, info: Any) -> None:
        explicit_in = _names(args.inputs)
        inputs = self._inputs(explicit_in if explicit_in is not None else info.reads,
                              info.writes, explicit_in is not None)
        outputs = _names(args.outputs)
        outputs = info.writes if outputs is None else outputs
        label = args.name or default_label(cell, info)
        hub = self.router.ensure_hub(self._address(auto=True))
        opts: dict[str, Any] = {"name": label, "max_retries": args.retries}
        for k in ("num_cpus", "num_gpus", "resources"):
            if getattr(args, k) is not None:
                opts[k] = getattr(args, k)
        run = CellRun(label, self.router.parent(), self._count(), [],
                      block=not args.no_block)
        spec = CellSpec(cell, filename, run.key, inputs, outputs, info.quiet)
        ns = self.sh.user_ns
        try:
            run.refs = submit(spec, hub, [ns[n] for n in inputs], opts)
        except Exception as e:
            raise _clean(_why_not_pickled(e, {n: ns[n] for n in inputs})) from None
        self.router.add(run)
        if not run.block:
            for name, ref in zip(outputs, run.refs):
                ns[name] = ref
            bound = f"; {', '.join(outputs)} now ObjectRef(s)" if outputs else ""
            print(f"jray: {label} submitted{bound}")
            return
        if not wait_for(self.router, [run]):
            return
        self.router.runs.pop(run.key, None)
        try:
            values = jray.get(run.refs)
        except Exception as e:
            raise _clean(getattr(e, "cause", None) or e, remote_traceback(e)) from None
        for name, value in zip(outputs, values):
            if isinstance(value, Unbound):
                print(f"jray: {name} not bound: {value.reason}", file=sys.stderr)
            else:
                ns[name] = value
        if values[-1] is not None:
            self.router.result(run, *values[-1])

    def _run_engines(self, args: argparse.Namespace, cell: str, filename: str,
                     quiet: bool) -> None:
        targets = self._targets(args.engine or "all")
        hub = self.router.ensure_hub(self._address(auto=False))
        runs: list[CellRun] = []
        for name, handle in targets.items():
            short = name.removeprefix("jray-")
            run = CellRun(short, self.router.parent(), self._count(), [],
                          block=not args.no_block,
                          prefix=f"[{short}] " if len(targets) > 1 else "")
            run.refs = [handle.execute.remote(CellSpec(cell, filename, run.key, quiet=quiet),
                                              hub)]
            self.router.add(run)
            runs.append(run)
        if args.no_block:
            print(f"jray: submitted to {', '.join(r.label for r in runs)}")
            return
        if not wait_for(self.router, runs):
            return
        failed: BaseException | None = None
        for run in runs:
            self.router.runs.pop(run.key, None)
            try:
                bundle = jray.get(run.refs[-1])
            except Exception as e:
                if len(runs) == 1:
                    raise _clean(getattr(e, "cause", None) or e, remote_traceback(e)) from None
                self.router.error(run, e)
                failed = e
                continue
            if bundle is not None:
                self.router.result(run, *bundle)
        if failed is not None:
            raise _clean(RuntimeError("the cell failed on some engines (tracebacks above)"))


def _why_not_pickled(err: Exception, values: dict[str, Any]) -> BaseException:
    """Name the input variable that could not be pickled, if one is the cause."""
    import cloudpickle

    for name, value in values.items():
        if isinstance(value, jray.ObjectRef):
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as e:
            return TypeError(f"variable {name!r} cannot be pickled for the remote cell: "
                             f"{type(e).__name__}: {e}")
    return err


def _fmt(resources: dict[str, Any]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "no resources"
