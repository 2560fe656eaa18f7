"""A live-view subscriber in its own process, for the ``*_watched`` workload.

``python -m benchmarks.watcher ADDRESS`` subscribes to the jray head's event
stream (proving the cluster's secret, which it reads from its stdin: another
process of the session hands it over, never on the command line), prints
``ready`` once the snapshot arrived, then every 200 ms takes
what arrived and applies it to a ``ViewModel`` and builds the patch a view
would draw, until SIGTERM; then it prints one JSON line of what it saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

INTERVAL_S = 0.2


class Watcher:
    """Runs the subscriber process for the duration of a ``with`` block."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._proc: subprocess.Popen[str] | None = None
        self._result: dict[str, Any] = {}

    def __enter__(self) -> Watcher:
        from jray._private.net import auth

        secret = auth.current_secret()
        if secret is None:
            raise RuntimeError("the watcher needs a jray session in this process (init first)")
        self._proc = subprocess.Popen([sys.executable, "-m", "benchmarks.watcher", self.address],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._proc.stdin.write(secret.hex() + "\n")
        self._proc.stdin.flush()  # (closed by communicate() at the end)
        line = self._proc.stdout.readline().strip()  # bounded: the child exits on error
        if line != "ready":
            self._proc.kill()
            self._proc.wait(10)
            raise RuntimeError(f"the event subscriber did not start (said {line!r})")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        self._result = json.loads(lines[-1]) if lines else {"tasks_seen": 0, "items": 0}

    def result(self) -> dict[str, Any]:
        return self._result


def main(address: str) -> None:
    from jray._private.event_stream import Subscription
    from jray._private.net import auth
    from jray.views.model import ViewModel

    auth.use_secret(bytes.fromhex(sys.stdin.readline().strip()))
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sub = Subscription(address)
    model = ViewModel()
    deadline = time.monotonic() + 30
    items = 0
    take_s = apply_s = 0.0
    apply_too = not os.environ.get("JRAY_WATCHER_NO_APPLY")
    while not stop:
        t0 = time.process_time()
        got = sub.take()
        t1 = time.process_time()
        if items:
            take_s += t1 - t0
        if got:
            if apply_too:
                model.apply(got)
                model.patch()
                if items:
                    apply_s += time.process_time() - t1
            if items == 0:
                print("ready", flush=True)
            items += len(got)
        elif items == 0 and time.monotonic() > deadline:
            print("no snapshot from the head within 30 s", flush=True)
            return
        time.sleep(INTERVAL_S if items else 0.01)
    sub.close()
    print(json.dumps({"tasks_seen": sum(model.counts.values()), "items": items,
                      "take_cpu_s": take_s, "apply_cpu_s": apply_s}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
