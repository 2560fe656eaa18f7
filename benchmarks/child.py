"""Child process: run the workloads on one peer and stream results as JSON lines.

Started by :mod:`benchmarks.microbenchmark` as
``python -m benchmarks.child --peer NAME --out FILE [--quick] ...``, one fresh
process per peer. Every record is appended to ``FILE`` and flushed as soon as
it exists, so when the parent kills a child at its timeout, the workloads that
finished are kept. Records (one JSON object a line, ``kind`` first):

* ``{"kind": "peer", "name", "version", "notes"}`` -- the peer imported;
* ``{"kind": "unavailable", "note"}`` -- it did not; nothing else follows;
* ``{"kind": "result", "workload", "status", "value", "detail"}`` with status
  ``ok``, ``n/a`` (the peer has no equivalent) or ``error``;
* ``{"kind": "done"}`` -- shutdown finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from typing import IO, Any

from benchmarks.peers import PEER_NAMES, Peer, PeerUnavailable, Unsupported, make_peer
from benchmarks.workloads import WORKLOAD_NAMES, WORKLOADS, Sizes


class _Sink:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def emit(self, kind: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"kind": kind, **fields}) + "\n")
        self._stream.flush()


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 300 else text[:297] + "..."


def run_peer(peer: Peer, sizes: Sizes, selected: list[str], sink: _Sink) -> None:
    """Init, run each selected workload in order, shut down; never raises."""
    initialised = False
    init_error = "init failed"
    if "init_to_first_result" not in selected:
        try:
            peer.init(sizes.num_cpus)
            initialised = True
        except Exception as exc:
            traceback.print_exc()
            init_error = f"init failed: {_short(exc)}"
    for workload in WORKLOADS:
        if workload.name not in selected:
            continue
        if workload.name != "init_to_first_result" and not initialised:
            sink.emit(
                "result", workload=workload.name, status="error", value=None, detail=init_error
            )
            continue
        print(f"[{peer.name}] {workload.name} ...", file=sys.stderr, flush=True)
        try:
            m = workload.run(peer, sizes)
        except Unsupported as exc:
            sink.emit("result", workload=workload.name, status="n/a", value=None, detail=str(exc))
        except Exception as exc:
            traceback.print_exc()
            sink.emit(
                "result", workload=workload.name, status="error", value=None, detail=_short(exc)
            )
            if workload.name == "init_to_first_result":
                init_error = f"init failed: {_short(exc)}"
        else:
            sink.emit("result", workload=workload.name, status="ok", value=m.value, detail=m.detail)
            print(
                f"[{peer.name}] {workload.name}: {m.value:.6g} {workload.unit} ({m.detail})",
                file=sys.stderr,
                flush=True,
            )
            # Only a successful init_to_first_result leaves a usable peer.
            initialised = True
    try:
        peer.shutdown()
    except Exception:
        traceback.print_exc()
    sink.emit("done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("--peer", required=True, choices=PEER_NAMES)
    parser.add_argument("--out", required=True, help="JSON-lines file to append to")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    args = parser.parse_args(argv)

    sizes = dataclasses.replace(
        Sizes.quick() if args.quick else Sizes.full(), num_cpus=args.num_cpus
    )
    selected = [w for w in args.workloads.split(",") if w]
    with open(args.out, "a", encoding="utf-8") as stream:
        sink = _Sink(stream)
        try:
            peer = make_peer(args.peer)
        except PeerUnavailable as exc:
            sink.emit("unavailable", note=str(exc))
            return 0
        sink.emit("peer", name=peer.name, version=peer.version, notes=peer.notes())
        run_peer(peer, sizes, selected, sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
