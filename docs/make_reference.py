"""Writes docs/reference.md from the code's own docstrings (run: python docs/make_reference.py).

The reference is generated so that it says what the code says: every public
name of ``jray``, ``jray.state``, ``jray.util`` and ``jray.exceptions``, both
magics (the same text as ``%jray?`` and ``%%remote?``), and the ``JRAY_*``
environment variables. tests/test_docs.py fails when the file is stale or when
a name or variable is missing here.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

#: Every environment variable jray reads, with what it does (tests check the list is complete).
ENVIRONMENT = {
    "JRAY_FULL_TRACEBACK": "`1` shows jray's own frames in tracebacks, remote (the worker loop) "
    "and local (the client functions IPython and pytest hide); for debugging jray itself.",
    "JRAY_SPILL_DIR": "where a node spills objects when its store is full, when `init` gets no "
    "`spill_dir` (default: the system's temporary directory); a private subdirectory is made "
    "in it.",
    "JRAY_SECRET_FILE": "the cluster's secret file, for `jray.init(address=...)`, "
    "`jray start --address` and `jray status` when no `--secret-file`/`_secret_file=` is given "
    "(default: the file `jray start --head` wrote under the user's runtime directory).",
    "JRAY_NODE_IP": "the address other machines reach this node's sockets at, when what its "
    "hostname resolves to is wrong (several interfaces, containers).",
    "JRAY_TCP_PLAINTEXT": "`1` in every process of a cluster turns CurveZMQ encryption off on "
    "its TCP sockets (to measure what it costs; the handshake still proves the secret).",
    "JRAY_PULL_CHUNK": "bytes per request when a node pulls an object from another machine's "
    "node (default 1 MiB).",
    "JRAY_PULL_WINDOW": "requests in flight per stream of such a pull (default 4).",
    "JRAY_PULL_STREAMS": "connections one pull spreads its chunks over, each encrypted on its "
    "own ZeroMQ I/O thread (default 4; at most 4 I/O threads, and no more than CPUs).",
    "JRAY_PROFILE_HEAD": "a file path: the head process runs under cProfile and writes its "
    "profile there when it stops (developer aid).",
    "JRAY_HIDDEN_DEVICES": "set by a node daemon for its task workers (not by users): the "
    "device variables (`CUDA_VISIBLE_DEVICES`, ...) of the node's devices, made empty for "
    "a task that holds none of them.",
}

#: What a user does about each error (tests check every exception has an entry).
REMEDIES = {
    "JrayError": "Catch it to handle any jray failure at once.",
    "ActorClassInheritanceException": "A class derived from an actor class (`@jray.remote` on "
    "a class): derive from the plain class, and decorate the subclass itself.",
    "TaskError": "Read `traceback_str` (printed with the error): it is the remote traceback, "
    "from your function down. `except OriginalClass` works too.",
    "WorkerCrashedError": "The worker died mid-task (segfault, `os._exit`, out of memory, "
    "killed). Raise `max_retries`, or find what kills it in the task's own output.",
    "TaskCancelledError": "Raised for tasks stopped by `jray.cancel` (or an interrupted cell); "
    "resubmit if you still need the value.",
    "GetTimeoutError": "The value was not ready within `timeout`; the task still runs. Wait "
    "longer, or `jray.cancel` it.",
    "ObjectLostError": "The object's bytes are gone and it cannot be rebuilt (a `put` object, "
    "a `max_retries=0` task, or a ref of a cluster that was shut down). Recompute it.",
    "ObjectStoreFullError": "Nothing more could be spilled: free refs (`del`), raise "
    "`object_store_memory`, or give `spill_dir` a disk with room (the message names it).",
    "ActorError": "Base of actor failures; catch it to handle any of them.",
    "ActorUnavailableError": "An actor call was in flight when its actor restarted and its "
    "`max_task_retries` (shared by exceptions and restarts) were used up: raise "
    "`max_task_retries` on the method or the call, or make the call idempotent and send it "
    "again.",
    "PendingCallsLimitExceeded": "An actor handle has `max_pending_calls` calls without "
    "results: get some results before calling again, or raise the limit.",
    "ActorDiedError": "The actor's process died or its constructor raised (the constructor's "
    "traceback is in `traceback_str`). Use `max_restarts` / `max_task_retries` to survive "
    "crashes.",
    "SerializationError": "A value could not be pickled (the message names the argument or "
    "variable) or unpickled in the worker (often a module missing there).",
    "ClusterError": "The cluster could not start or went away; the message says which process "
    "and where its log is. `jray.shutdown()` then `jray.init()` starts afresh.",
    "InitError": "`init` called twice (use `ignore_reinit_error=True`), the API used in a "
    "forked child, or a bad `init` option (named in the message).",
    "ActorClassInheritanceException": "A class cannot derive from an actor class (the result "
    "of `@jray.remote`): derive from the plain class and decorate the subclass.",
    "ArgumentError": "A bad argument to `get`, `wait`, `kill`, ...: the message names it.",
}


def _doc(obj: Any) -> str:
    return inspect.getdoc(obj) or "(no docstring)"


def _signature(name: str, obj: Any) -> str:
    for eval_str in (True, False):  # resolved annotations when they evaluate here
        try:
            text = str(inspect.signature(obj, eval_str=eval_str))
            return name + re.sub(r"\b(?:jray|collections\.abc|typing)\.(?:[a-z_]+\.)*", "", text)
        except (TypeError, ValueError, NameError):
            continue
    return name


def _section(title: str, module: Any, names: list[str], prefix: str) -> list[str]:
    out = [f"## {title}", ""]
    for name in sorted(names):
        obj = getattr(module, name)
        if inspect.ismodule(obj):
            out += [f"### `{prefix}{name}`", "", "Module: see its section below.", ""]
            continue
        if not (callable(obj) or inspect.isclass(obj)):
            out += [f"### `{prefix}{name}`", "", f"`{obj!r}`", ""]
            continue
        out += [f"### `{_signature(prefix + name, obj)}`", "", _doc(obj), ""]
    return out


def _exceptions() -> list[str]:
    from jray import exceptions as E

    out = ["## Errors (`jray.exceptions`)", "", "```", _doc(E), "```", ""]
    out += ["| error | what to do |", "| --- | --- |"]
    for name in sorted(REMEDIES):
        out.append(f"| `{name}` | {REMEDIES[name]} |")
    aliases = sorted(n for n in E.__all__ if n not in REMEDIES)
    out += ["", "Ray's names, each an alias or a subclass placed as in Ray (see the tree): "
            + ", ".join(f"`{n}`" for n in aliases) + ".", ""]
    return out


def _magics() -> list[str]:
    from jray.jupyter.magics import JrayMagics

    return ["## Notebook magics (`%load_ext jray`)", "",
            "### `%jray`", "", _doc(JrayMagics.jray_line), "",
            "### `%%remote`", "", _doc(JrayMagics.remote), ""]


def render() -> str:
    import jray
    import jray.cluster
    import jray.state
    import jray.util

    lines = ["# jray reference", "",
             "Generated from the docstrings by `docs/make_reference.py`; do not edit by hand.",
             ""]
    lines += _section("The API (`import jray`)", jray, list(jray.__all__), "jray.")
    lines += _section("State API (`jray.state`)", jray.state, list(jray.state.__all__),
                      "jray.state.")
    lines += _section("Utilities (`jray.util`)", jray.util, list(jray.util.__all__),
                      "jray.util.")
    lines += _section("Clusters (`jray.cluster`)", jray.cluster, ["start_ssh"],
                      "jray.cluster.")
    lines += _magics()
    lines += _exceptions()
    lines += ["## Environment variables", "", "| variable | effect |", "| --- | --- |"]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(ENVIRONMENT.items())]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    target = Path(__file__).with_name("reference.md")
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
