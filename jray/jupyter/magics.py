"""``%jray`` and ``%%remote``: thin magics that parse arguments and call the layers below.

- ``%jray init|status|dashboard|shutdown|engines|push|pull``
- ``%%remote [options]``: the cell as a task (inputs and outputs found by
  ``cell.analyze``), or in engines' namespaces with ``--engine``/``--engines``.

Nothing a magic shows is returned to IPython, so ``Out``/``_`` never hold
remote values: a last expression is published as an ``execute_result`` by
``Router.result`` directly. Every cluster operation goes through ``self.backend``
(``jray.jupyter.backends``): jray's own cluster unless ``%jray init --backend``
chose another.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from jray._private.debug import HIDE
from jray.jupyter import backends, bind, options, status, syntax
from jray.jupyter import engines as E
from jray.jupyter.cell import CellInfo, analyze, default_label, global_stores
from jray.jupyter.output import CellRun, Router, remote_traceback
from jray.jupyter.progress import wait_for
from jray.jupyter.remote_cell import CellSpec, nested_refs, submit, writable

#: How many ``--no-block`` cells' last values ``%jray result`` keeps (by label).
MAX_RESULTS = 64


def _clean(exc: BaseException, text: str | None = None) -> BaseException:
    """Make IPython show ``text`` (default: ``Type: message``) instead of our own frames."""
    lines = (text or f"{type(exc).__name__}: {exc}").rstrip("\n").split("\n")
    try:
        exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
    except Exception:
        pass
    return exc


def _interrupted(labels: list[str]) -> BaseException:
    """The error an interrupted cell ends with (so queued cells are not run)."""
    return _clean(KeyboardInterrupt(f"the cell was interrupted; cancelled: {', '.join(labels)}"))


@magics_class
class JrayMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.sh: Any = shell  # IPython types Magics.shell as Optional
        self.router = Router(shell, backends.make("jray"))
        self.get_hook: Callable[..., None] | None = None  # set by load_ipython_extension
        self.engines: dict[str, Any] = {}
        self.own_tb_handler = False  # set by load_ipython_extension
        self.engine_need: dict[str, dict[str, float]] = {}  # what each engine holds
        self.results: dict[str, Any] = {}  # label -> last-value ref of a --no-block cell
        self.line_parser = options.line_parser()
        self.cell_parser = options.cell_parser()

    def _count(self) -> int:
        """The running cell's number (IPython has advanced ``execution_count`` already)."""
        return int(getattr(self.sh.displayhook, "prompt_count", self.sh.execution_count - 1))

    @property
    def backend(self) -> backends.Backend:
        return self.router.backend

    def use_backend(self, backend: backends.Backend) -> None:
        """Run every magic on ``backend`` from now on (its hooks moved over to it)."""
        old = self.router.backend
        if old is backend:
            return
        old.set_get_hook(None)
        self.router.reset()
        self.results.clear()  # refs and handles of the old runtime mean nothing here
        self.engines.clear()
        self.engine_need.clear()
        self.router.backend = backend
        if backend.caps.get_hook and self.get_hook is not None:
            backend.set_get_hook(self.get_hook)

    # --- cluster ---------------------------------------------------------------------
    def _address(self, auto: bool) -> str:
        b = self.backend
        if not b.is_initialized():
            if not auto:
                raise _clean(RuntimeError(f"no {b.name} cluster; run %jray init first"))
            info = b.init()
            print(f"jray: started a local {_where(b)}cluster ({_fmt(info['resources'])}); "
                  f"%jray init sets its size")
        return str(b.info().get("address", ""))

    def close(self) -> None:
        """Stop the timer; shut down a cluster this extension started (unload)."""
        self.router.reset("the jray extension was unloaded")
        b = self.backend
        b.set_get_hook(None)
        if b.started and b.is_initialized():
            b.shutdown()
            print("jray: unloading the extension shut down the cluster it started; "
                  "%jray init starts a new one", file=sys.stderr)
        self.engines.clear()
        self.engine_need.clear()

    # --- %jray -----------------------------------------------------------------------
    @line_magic("jray")  # type: ignore[arg-type]  # IPython's marker is typed for Never
    def jray_line(self, line: str) -> None:
        """Manage the jray cluster and its engines.

        ::

          %jray init [--num-cpus N] [--num-gpus N] [--resources JSON]
                     [--object-store-memory SIZE]   start a local cluster (or report it)
          %jray init --backend ray [--address ADDR] run every magic on Ray: a local Ray
                                                    instance, or join the cluster at ADDR
                                                    (never stopped; docs/ray-backend.md)
          %jray start --ssh USER@HOST[,...] [--num-cpus N]  nodes on other machines over SSH
                                                    (joining a jray start --head cluster)
          %jray status                              nodes, resources, tasks, object store
          %jray dashboard                           a live view of the task DAG and the store
          %jray shutdown                            stop the cluster (pending cells say so)
          %jray engines [N] [--num-cpus N] [--num-gpus N] [--resources JSON]
                                                    start engines up to N, or list them
          %jray push TARGETS a,b                    copy notebook variables to engines
          %jray pull TARGETS a,b [--zero-copy]      copy variables back (several engines:
                                                    a list per name, in engine order)
          %jray result LABEL                        the last value of a --no-block cell

        TARGETS: ``0``, ``engine-1``, ``0,2``, ``1:3`` or ``all``. A bad argument is a
        ``UsageError`` naming it; engines that cannot be placed fail at once.

        Examples::

          %jray init --num-cpus 4
          %jray init --backend ray --address 10.0.0.5:6379
          %jray engines 2 --num-cpus 1
          %jray push all config
          %jray pull 0 model
        """
        __tracebackhide__ = HIDE  # noqa: F841
        args = options.parse(self.line_parser, line)
        cmd: Callable[[argparse.Namespace], None] = getattr(self, "_cmd_" + args.cmd)
        cmd(args)

    def _cmd_init(self, a: argparse.Namespace) -> None:
        self.init(a.backend, a.address, num_cpus=a.num_cpus, num_gpus=a.num_gpus,
                  resources=a.resources, object_store_memory=a.object_store_memory)

    def init(self, backend: str | None = None, address: str | None = None,
             **options: Any) -> dict[str, Any]:
        """Start (or join) the cluster the magics run on; what ``%jray init`` does.

        ``backend``: ``"jray"`` (the default) or ``"ray"``; None keeps the current one.
        ``address``: join a running cluster there (never stopped by the notebook).
        """
        b = self.backend
        if backend is not None and backend != b.name:
            if b.is_initialized():
                raise UsageError(f"%jray init --backend {backend}: a {b.name} cluster is "
                                 f"running; %jray shutdown first")
            try:
                new = backends.make(backend)
            except ImportError as e:
                raise UsageError(f"%jray init --backend {backend}: {e}") from None
            self.use_backend(new)
            b = new
        if b.is_initialized():
            info = b.info()
            print(f"jray: a {_where(b)}cluster is already running "
                  f"({_fmt(info.get('resources', {}))}) at {info.get('address')}; "
                  f"%jray shutdown first to change it")
            return info
        options = {k: v for k, v in options.items() if v is not None}
        try:
            info = b.init(address, **options)
        except b.init_errors as e:
            raise _clean(e) from None
        how = "connected to the" if address and not b.started else "started a local"
        print(f"jray: {how} {_where(b)}cluster ({_fmt(info['resources'])}) "
              f"at {info['address']}")
        return info

    def _cmd_start(self, a: argparse.Namespace) -> None:
        if self.backend.name != "jray":
            raise UsageError(f"%jray start --ssh: nodes over SSH join jray's own cluster; "
                             f"the magics run on {self.backend.name} now")
        from jray._private.net import ssh
        from jray.exceptions import JrayError

        hosts = [h.strip() for h in a.ssh.split(",") if h.strip()]
        try:
            nodes = ssh.start_nodes(hosts, num_cpus=a.num_cpus, python=a.python)
        except (JrayError, ValueError) as e:
            raise _clean(e) from None
        print(f"jray: {len(nodes)} node(s) joined over SSH: {', '.join(hosts)}")

    def _cmd_status(self, a: argparse.Namespace) -> None:
        if not self.backend.is_initialized():
            print("jray: no cluster running (%jray init starts one)")
            return
        from IPython.display import display

        display(status.bundle(self.backend, self.engines),  # type: ignore[no-untyped-call]
                raw=True)

    def _cmd_dashboard(self, a: argparse.Namespace) -> None:
        if not self.backend.caps.views:
            raise UsageError(f"%jray dashboard: the live views are not available on the "
                             f"{self.backend.name} backend (see docs/ray-backend.md)")
        self._address(auto=True)
        from IPython.display import display

        display(self.backend.dashboard())  # type: ignore[no-untyped-call]

    def _cmd_shutdown(self, a: argparse.Namespace) -> None:
        self.router.reset("%jray shutdown stopped the cluster")
        self.results.clear()
        self.engines.clear()
        self.engine_need.clear()
        b = self.backend
        if not b.is_initialized():
            print("jray: no cluster running")
            return
        started = b.started
        b.shutdown()
        print("jray: cluster shut down" if started else
              f"jray: disconnected from the {b.name} cluster (it keeps running)")

    def _cmd_engines(self, a: argparse.Namespace) -> None:
        if a.n is not None:
            self._start_engines(a)
            return
        if not self.engines:
            print("jray: no engines (%jray engines N starts N)")
            return
        for row in E.describe(self.backend, self.engines):
            print(f"{row['name']}  pid={row['pid']}  host={row['host']}  "
                  f"variables: {', '.join(row['variables']) or '-'}")

    def _start_engines(self, a: argparse.Namespace) -> None:
        """Start engines up to ``a.n``: checked against the cluster first; an engine that
        cannot be placed within ``E.START_TIMEOUT_S`` is killed, never registered."""
        self._address(auto=True)
        opts = {k: v for k, v in (("num_cpus", a.num_cpus), ("num_gpus", a.num_gpus),
                                  ("resources", a.resources)) if v is not None}
        holds = options.demand(a, 0.0)  # engines hold no CPU unless asked to
        new = max(0, a.n - len(self.engines))
        nodes = self.backend.nodes()
        options.check_placeable("%jray engines", options.demand(a, 1.0), nodes)
        if new and holds:
            held: dict[str, float] = {}
            for need in self.engine_need.values():
                for k, v in need.items():
                    held[k] = held.get(k, 0.0) + v
            free = [{**n, "Resources": {k: v - held.get(k, 0.0)
                                        for k, v in n.get("Resources", {}).items()}}
                    for n in nodes]
            options.check_placeable("%jray engines", holds, free, count=new)
        started, failed = E.start(self.backend, self.engines, a.n, opts)
        for name in started:
            self.engine_need[name] = holds
        if failed:
            raise UsageError(f"%jray engines: {failed}; started {len(started)} engine(s): "
                             f"{', '.join(started) or '-'}")
        print(f"jray: started {len(started)} engine(s): {', '.join(started) or '-'}; "
              f"{len(self.engines)} running")

    def _targets(self, spec: str, option: str = "engine") -> dict[str, Any]:
        if not self.engines:
            raise _clean(RuntimeError("no engines running; %jray engines N starts N"))
        try:
            return E.select(self.engines, spec)
        except KeyError as e:
            raise UsageError(f"{option} {spec}: {e.args[0]}") from None

    def _cmd_push(self, a: argparse.Namespace) -> None:
        names = options.names(a.names, "%jray push") or ()
        ns = self.sh.user_ns
        for n in names:
            if n not in ns:
                raise _clean(NameError(f"name {n!r} is not defined"))
        targets = self._targets(a.engine)
        self.backend.get([h.push.remote({n: ns[n] for n in names})
                          for h in targets.values()])

    def _cmd_pull(self, a: argparse.Namespace) -> None:
        """One engine: its values; several (``all``, ``0,1``): a list per name, in order."""
        targets = self._targets(a.engine)
        names = list(options.names(a.names, "%jray pull") or ())
        try:
            got = self.backend.get([h.pull.remote(names) for h in targets.values()])
        except Exception as e:
            cause = self.backend.error_cause(e)
            raise _clean(cause or e, remote_traceback(e, cause).strip().splitlines()[-1]) \
                from None
        values = got[0] if len(got) == 1 and a.engine != "all" and "," not in a.engine \
            and ":" not in a.engine else {n: [g[n] for g in got] for n in names}
        self.sh.user_ns.update(values if a.zero_copy else writable(values))

    def _cmd_result(self, a: argparse.Namespace) -> None:
        """Show the last value of the latest ``--no-block`` cell labelled ``a.label``."""
        ref = self.results.get(a.label)
        if ref is None:
            known = ", ".join(self.results) or "none yet"
            raise UsageError(f"%jray result: no --no-block cell labelled {a.label!r} "
                             f"(labels: {known})")
        try:
            bundle = self.backend.get(ref)
        except Exception as e:
            raise self._task_error(e) from None
        if bundle is not None:
            from IPython.display import display

            display(bundle[0], metadata=bundle[1], raw=True)  # type: ignore[no-untyped-call]

    def _task_error(self, err: BaseException) -> BaseException:
        """What a failed task shows: the user's exception with the cell's traceback."""
        cause = self.backend.error_cause(err)
        return _clean(cause or err, remote_traceback(err, cause))

    # --- %%remote --------------------------------------------------------------------
    @cell_magic("remote")  # type: ignore[arg-type]  # (same)
    def remote(self, line: str, cell: str) -> None:
        """Run the cell remotely, as a task (default) or in engines' namespaces.

        ::

          %%remote [--num-cpus N] [--num-gpus N] [--resources JSON] [--no-block]
                   [--name LABEL] [--in a,b] [--out x,y] [--zero-copy]
                   [--retries N] [--retry-exceptions]
                   [--progress-after SECONDS] [--no-progress]
                   [--engine NAME | --engines all | --targets 0,2|1:3]

        Inputs are the notebook names the cell reads (refs inside them are
        resolved); outputs are the names it binds, and inputs it changes in place,
        rebound in the notebook when it ends (``--no-block``: bound to ObjectRefs at
        once; ``%jray result LABEL`` shows its last value later). Imports bind the
        modules in the notebook; ``del x`` deletes ``x``. ``!cmd``, ``x = !cmd``,
        ``%pwd``, ``%env`` and ``%sx`` run remotely; magics that need the kernel are
        refused before submitting. ``--retries N`` reruns the cell after a worker
        crash, and with ``--retry-exceptions`` also after an exception. Interrupting
        the kernel cancels the cell's tasks and fails the cell.

        Examples::

          %%remote --num-cpus 2
          total = sum(x * x for x in data)
          total

          %%remote --no-block --name load
          import pandas as pd
          df = pd.read_csv(path)
        """
        __tracebackhide__ = HIDE  # noqa: F841
        args = options.parse(self.cell_parser, line)
        filename = f"<remote-cell-{self._count()}>"
        listing = "\n" + cell  # line numbers as in the notebook, where line 1 is %%remote
        try:
            source = syntax.to_python(listing)
            info = analyze(source, filename)
        except SyntaxError as e:
            raise _clean(e) from None
        commands = syntax.check(source, listing)
        if args.engine or args.engines or args.targets:
            self._run_engines(args, source, listing, filename, info.quiet)
        else:
            self._run_task(args, line, source, listing, filename, info,
                           syntax.command_names(commands))

    def _inputs(self, names: list[str], bound_in_cell: set[str], explicit: bool,
                lenient: bool) -> tuple[str, ...]:
        ns = self.sh.user_ns
        out: list[str] = []
        for n in names:
            if n in ns:
                out.append(n)
            elif explicit or (not hasattr(builtins, n) and n not in bound_in_cell
                              and not lenient):
                raise _clean(NameError(f"name {n!r} is not defined"))
        return tuple(out)

    def _run_task(self, args: argparse.Namespace, line: str, source: str, listing: str,
                  filename: str, info: CellInfo, command_names: list[str]) -> None:
        explicit_in = options.names(args.inputs, "%%remote --in")
        star = bind.star_names(info.star_imports)
        reads = [n for n in (*info.reads, *command_names) if n != "get_ipython"
                 and n not in (star or {})]
        inputs = self._inputs(list(explicit_in) if explicit_in is not None else reads,
                              set(info.writes), explicit_in is not None, lenient=star is None)
        explicit_out = options.names(args.outputs, "%%remote --out")
        imports = dict(info.imports)
        ns = self.sh.user_ns
        in_place = tuple(n for n in info.mutated if n in inputs)
        watched = tuple(n for n in info.watched if n in inputs and n not in info.writes
                        and n not in in_place and bind.mutable(ns[n], self.backend.is_ref))
        if explicit_out is None:
            outputs = tuple(w for w in info.writes if w not in imports)
            outputs += tuple(d for d in info.deletes if d not in info.writes)
            changed = [g for n in inputs for g in global_stores(ns[n])]
            changed += in_place + (watched if not args.no_block else ())
            outputs += tuple(dict.fromkeys(g for g in changed if g not in outputs))
        else:
            outputs = explicit_out
            imports = {k: v for k, v in imports.items() if k in explicit_out}
        label = args.name or default_label(listing, info)
        address = self._address(auto=True)
        backend = self.backend
        if args.num_cpus is not None or args.num_gpus or args.resources:
            options.check_placeable("%%remote", options.demand(args, 1.0), backend.nodes())
        hub = self.router.ensure_hub(address)
        opts: dict[str, Any] = {"name": label, "max_retries": args.retries}
        if args.retry_exceptions:
            opts["retry_exceptions"] = True
        for k in ("num_cpus", "num_gpus", "resources"):
            if getattr(args, k) is not None:
                opts[k] = getattr(args, k)
        parent = self.router.parent()
        run = CellRun(label, parent, self._count(), [], block=not args.no_block,
                      cell_id=_cell_id(parent, line, listing))
        replaced = self.router.replace(run.cell_id)
        if replaced:
            print(f"jray: cancelled the previous run of this cell ({', '.join(replaced)}), "
                  f"still running when it was run again", file=sys.stderr)
        rt = backend.rt
        held = list({rt.ref_id(r): r for n in inputs for r in nested_refs(ns[n], rt)}.values())
        spec = CellSpec(source, filename, run.key, inputs, tuple(n for n in outputs
                        if n not in imports), info.quiet, listing, in_place, watched,
                        tuple(rt.ref_id(r) for r in held), rt)
        try:
            run.refs = submit(backend, spec, hub, [*(ns[n] for n in inputs), *held], opts)
        except Exception as e:
            raise _clean(_why_not_pickled(e, {n: ns[n] for n in inputs}, rt.is_ref)) from None
        self.router.add(run)
        if not run.block:
            self.results.pop(label, None)
            self.results[label] = run.refs[-1]
            while len(self.results) > MAX_RESULTS:  # oldest first: they hold their values
                self.results.pop(next(iter(self.results)))
            self._bound_at_submission(run, spec, info, imports, star)
            return
        if wait_for(self.router, [run], _progress_after(args)):
            raise _interrupted([run.label])
        self.router.done(run)
        try:
            values = backend.get(run.refs)
        except Exception as e:
            raise self._task_error(e) from None
        notes = bind.apply(ns, spec.outputs, values, info, explicit_out is not None,
                           args.zero_copy)
        modules, failed = bind.import_here(imports.items())
        ns.update(star or {})
        ns.update(modules)
        if failed:
            notes.append(f"jray: left as they were (the kernel cannot import them): "
                         f"{', '.join(failed)}")
        for note in notes:
            print(note, file=sys.stderr)
        if values[-1] is not None:
            self.router.result(run, *values[-1])

    def _bound_at_submission(self, run: CellRun, spec: CellSpec, info: CellInfo,
                             imports: dict[str, str], star: dict[str, Any] | None) -> None:
        """A ``--no-block`` cell: outputs become refs now; imports bind modules now."""
        ns = self.sh.user_ns
        for name, ref in zip(spec.outputs, run.refs):
            ns[name] = ref
        modules, failed = bind.import_here(imports.items())
        ns.update(star or {})
        ns.update(modules)
        gone = [d for d in info.deletes if d not in info.writes and d in ns]
        for name in gone:
            del ns[name]
        said = [f"jray: {run.label} submitted"]
        if spec.outputs:
            said.append(f"{', '.join(spec.outputs)} now ObjectRef(s)")
        if modules:
            said.append(f"{', '.join(modules)} imported here")
        if gone:
            said.append(f"{', '.join(gone)} deleted")
        print("; ".join(said))
        if failed:
            print(f"jray: left as they were (the kernel cannot import them): "
                  f"{', '.join(failed)}", file=sys.stderr)

    def _run_engines(self, args: argparse.Namespace, source: str, listing: str,
                     filename: str, quiet: bool) -> None:
        targets = self._targets(args.targets or args.engine or "all",
                                "--targets" if args.targets else "--engine")
        hub = self.router.ensure_hub(self._address(auto=False))
        runs: list[CellRun] = []
        for name, handle in targets.items():
            short = name.removeprefix("jray-")
            run = CellRun(short, self.router.parent(), self._count(), [],
                          block=not args.no_block,
                          prefix=f"[{short}] " if len(targets) > 1 else "")
            spec = CellSpec(source, filename, run.key, quiet=quiet, listing=listing,
                            rt=self.backend.rt)
            run.refs = [handle.execute.remote(spec, hub)]
            self.router.add(run)
            runs.append(run)
        if args.no_block:
            print(f"jray: submitted to {', '.join(r.label for r in runs)}")
            return
        failed: list[str] = []

        def show(run: CellRun) -> None:  # each engine's result or error as it happens
            self.router.done(run)
            try:
                bundle = self.backend.get(run.refs[-1])
            except Exception as e:
                if len(runs) == 1:
                    raise self._task_error(e) from None
                self.router.error(run, e)
                failed.append(run.label)
                return
            if bundle is not None:
                self.router.result(run, *bundle)

        cancelled = wait_for(self.router, runs, _progress_after(args), on_done=show)
        if cancelled:
            raise _interrupted([r.label for r in cancelled])
        if failed:
            raise _clean(RuntimeError(f"the cell failed on {', '.join(failed)} "
                                      f"(tracebacks above)"))


def _progress_after(args: argparse.Namespace) -> float | None:
    return None if args.no_progress else args.progress_after


def _cell_id(parent: dict[str, Any] | None, line: str, listing: str) -> str:
    """The notebook cell being run: the front end's ``cellId``, else the cell's text."""
    cell_id = ((parent or {}).get("metadata") or {}).get("cellId")
    if cell_id:
        return str(cell_id)
    return hashlib.sha1(f"{line}\n{listing}".encode()).hexdigest()


def _where(backend: backends.Backend) -> str:
    return "" if backend.name == "jray" else f"{backend.name} "


def _why_not_pickled(err: Exception, values: dict[str, Any],
                     is_ref: Callable[[Any], bool]) -> BaseException:
    """Name the input variable that could not be pickled, if one is the cause."""
    import cloudpickle

    for name, value in values.items():
        if is_ref(value):
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as e:
            return TypeError(f"variable {name!r} cannot be pickled for the remote cell: "
                             f"{type(e).__name__}: {e}")
    return err


def _fmt(resources: dict[str, Any]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "no resources"
