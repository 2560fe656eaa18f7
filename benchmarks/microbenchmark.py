"""Benchmark runner: the same microbenchmarks on jray, Ray, dask and concurrent.futures.

Usage (from the repository root)::

    python -m benchmarks.microbenchmark [--peers jray,ray,dask,futures] [--quick]
        [--json OUT] [--markdown [OUT]] [--timeout 300] [--workloads a,b,...]

Each peer runs in a fresh subprocess (:mod:`benchmarks.child`) in its own
process group, so one peer's background processes cannot disturb another and
a crash or hang costs only that peer. The child streams one JSON line per
finished workload; the parent kills the whole group after ``--timeout``
seconds and reports what did not finish as ``timeout``. Peers that cannot be
imported are skipped with a note naming the missing package.

The printed table has one column per peer and one ``jray/<peer>`` ratio column
per other peer, oriented so that > 1 means jray is better.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers import PEER_NAMES
from benchmarks.report import compute_ratios, format_value, render_markdown, render_text
from benchmarks.workloads import WORKLOAD_NAMES, WORKLOADS, Sizes

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_LINES = 25


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Worker processes of every peer must be able to import benchmarks._tasks.
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``.

    The child calls setsid, so its session id is its pid. Peers may move their
    workers into process groups of their own (Ray does), but those stay in the
    child's session. Linux only (/proc); elsewhere the child's process group
    stands in for the session.
    """
    if not os.path.isdir("/proc"):
        try:
            os.killpg(sid, 0)
        except OSError:
            return []
        return [sid]
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the ")" closing the command name: state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and fields[0] != "Z" and fields[3] == str(sid):
            pids.append(int(entry))
    return pids


def _signal_session(sid: int, sig: signal.Signals) -> None:
    if not os.path.isdir("/proc"):
        with contextlib.suppress(OSError):
            os.killpg(sid, sig)
        return
    for pid in _session_pids(sid):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _wait_session(sid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for session ``sid`` to empty; True when it did."""
    deadline = time.monotonic() + seconds
    while _session_pids(sid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _end_session(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """Let the child's session exit within ``grace_s``, then TERM it, then KILL it.

    The child itself is reaped as soon as it exits, so a session left with
    nothing but zombies of its own children still reads as empty.
    """
    sid = proc.pid
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()
        if _wait_session(sid, 0.0):
            return
        time.sleep(0.1)
    _signal_session(sid, signal.SIGTERM)
    proc.poll()
    if _wait_session(sid, 3.0):
        return
    _signal_session(sid, signal.SIGKILL)
    proc.wait()
    _wait_session(sid, 2.0)


class _Progress:
    """Reads the child's JSON-lines file as it grows and prints each result."""

    def __init__(self, path: Path, peer: str, verbose: bool) -> None:
        self._path = path
        self._peer = peer
        self._offset = 0
        self._verbose = verbose
        self.records: list[dict[str, Any]] = []
        self._units = {w.name: w.unit for w in WORKLOADS}

    def poll(self) -> None:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a half-written line waits
        self._offset += len(complete)
        for text in complete.decode("utf-8").splitlines():
            if not text.strip():
                continue
            record: dict[str, Any] = json.loads(text)
            self.records.append(record)
            self._show(record)

    def _show(self, record: dict[str, Any]) -> None:
        if record["kind"] != "result":
            return
        if record["status"] == "ok":
            value = f"{format_value(record['value'])} {self._units.get(record['workload'], '')}"
        else:
            value = record["status"]
        extra = f"  ({record['detail']})" if self._verbose or record["status"] == "error" else ""
        print(f"  {self._peer:<8} {record['workload']:<28} {value}{extra}", flush=True)


def run_child(peer: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run one peer's child to completion or timeout; return its peer entry."""
    out = workdir / f"{peer}.jsonl"
    log = workdir / f"{peer}.log"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.child",
        "--peer",
        peer,
        "--out",
        str(out),
        "--num-cpus",
        str(args.num_cpus),
        "--workloads",
        ",".join(args.workloads),
    ]
    if args.quick:
        cmd.append("--quick")
    progress = _Progress(out, peer, args.verbose)
    load_start = _loadavg()
    start = time.monotonic()
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=None if args.verbose else log_file,
            stderr=None if args.verbose else subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        while proc.poll() is None:
            progress.poll()
            if time.monotonic() - start > args.timeout:
                timed_out = True
                break
            time.sleep(0.2)
        # The child's own exit is not enough: its peer may leave daemons behind.
        _end_session(proc, grace_s=0.0 if timed_out else 5.0)
        proc.wait()
    progress.poll()
    elapsed = time.monotonic() - start

    entry: dict[str, Any] = {
        "status": "ok",
        "version": None,
        "note": "",
        "notes": {},
        "elapsed_s": round(elapsed, 2),
        # Other work on the machine skews the numbers: keep the load beside them.
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "results": {},
    }
    for record in progress.records:
        kind = record["kind"]
        if kind == "unavailable":
            entry.update(status="unavailable", note=record["note"])
        elif kind == "peer":
            entry.update(version=record["version"], notes=record["notes"])
        elif kind == "result":
            entry["results"][record["workload"]] = {
                k: record[k] for k in ("status", "value", "detail")
            }
    finished = any(r["kind"] == "done" for r in progress.records)
    if entry["status"] == "unavailable":
        return entry
    if timed_out:
        entry.update(status="timeout", note=f"killed after {args.timeout:g}s")
    elif not finished:
        entry.update(status="crashed", note=f"child exited with code {proc.returncode}")
    if entry["status"] != "ok":
        for name in args.workloads:
            entry["results"].setdefault(
                name, {"status": entry["status"], "value": None, "detail": entry["note"]}
            )
        if not args.verbose:
            _print_log_tail(log, peer)
    return entry


def _loadavg() -> str | None:
    """The 1/5/15-minute load averages from /proc/loadavg (None where absent)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def _print_log_tail(log: Path, peer: str) -> None:
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    print(f"  --- last lines of {peer}'s output ---", file=sys.stderr)
    for text in lines:
        print(f"  | {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every requested peer and return the results document."""
    sizes = Sizes.quick() if args.quick else Sizes.full()
    doc: dict[str, Any] = {
        "meta": {
            "quick": args.quick,
            "num_cpus": args.num_cpus,
            "timeout_s": args.timeout,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "sizes": sizes.as_dict() | {"num_cpus": args.num_cpus},
        "workloads": [
            {
                "name": w.name,
                "unit": w.unit,
                "higher_is_better": w.higher_is_better,
                "description": w.describe,
            }
            for w in WORKLOADS
            if w.name in args.workloads
        ],
        "peers": {},
    }
    with tempfile.TemporaryDirectory(prefix="jray-bench-") as tmp:
        for peer in args.peers:
            print(f"{peer}: running ...", flush=True)
            entry = run_child(peer, args, Path(tmp))
            doc["peers"][peer] = entry
            if entry["status"] == "unavailable":
                print(f"{peer}: skipped -- {entry['note']}", flush=True)
            else:
                print(f"{peer}: {entry['status']} in {entry['elapsed_s']:.1f}s", flush=True)
    doc["ratios"] = compute_ratios(doc)
    return doc


def _csv(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})"
        )
    return list(dict.fromkeys(items))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.microbenchmark",
        description="Ray-style microbenchmarks on jray and its peers (> 1 ratio: jray better).",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEER_NAMES),
        type=lambda s: _csv(s, PEER_NAMES, "peer"),
        help="comma-separated peers, in run order (default: %(default)s)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOAD_NAMES),
        type=lambda s: _csv(s, WORKLOAD_NAMES, "workload"),
        help="comma-separated subset of workloads (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shrunk sizes for a smoke test (well under a minute per peer)",
    )
    parser.add_argument("--json", metavar="OUT", help="write the results document here")
    parser.add_argument(
        "--markdown",
        metavar="OUT",
        nargs="?",
        const="-",
        help="also emit a Markdown table, to OUT or stdout",
    )
    parser.add_argument(
        "--from-json", metavar="IN", help="render tables from a saved results document; run nothing"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds before a peer's child is killed (default: %(default)s)",
    )
    parser.add_argument(
        "--num-cpus", type=int, default=2, help="worker processes per peer (default: %(default)s)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the children's output and every result's detail",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        doc: dict[str, Any] = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        doc = run(args)
    print()
    print(render_text(doc))
    if args.markdown:
        markdown = render_markdown(doc) + "\n"
        if args.markdown == "-":
            print()
            print(markdown, end="")
        else:
            Path(args.markdown).write_text(markdown, encoding="utf-8")
            print(f"\nMarkdown table written to {args.markdown}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"Results written to {args.json}")
    # Non-zero when nothing ran, or a peer that ran failed, hung or hit an error.
    ran = [p for p in doc["peers"].values() if p["status"] != "unavailable"]
    failed = [
        p
        for p in ran
        if p["status"] != "ok" or any(r["status"] == "error" for r in p["results"].values())
    ]
    return 0 if ran and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
