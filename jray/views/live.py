"""The one live model of this process's cluster: a subscription plus a ``ViewModel``."""

from __future__ import annotations

import atexit
from typing import Any

from jray._private import api
from jray._private.event_stream import Subscription
from jray.views.model import EventSource, ViewModel


class Live:
    """A model fed by an event source; ``step()`` applies what arrived, returns a patch."""

    def __init__(self, source: EventSource, model: ViewModel | None = None,
                 client: Any = None) -> None:
        self.source = source
        self.model = model or ViewModel()
        #: the jray client whose cluster this is (a new ``init`` makes a new Live)
        self.client = client

    def step(self) -> dict[str, Any] | None:
        items = self.source.take()
        if items:
            self.model.apply(items)
        return self.model.patch()

    def close(self) -> None:
        self.source.close()


_live: Live | None = None


def live() -> Live:
    """The live model of the current cluster (made on first use, remade after a re-init)."""
    return _live_for(api.client())


def _live_for(client: Any) -> Live:
    global _live
    if _live is None or _live.client is not client or client.closed:
        if _live is not None:  # its client may be closed already: its socket is not
            _live.close()
        addr = api._Session.info.get("address")
        if not addr:
            raise RuntimeError("jray live views need a driver's cluster (jray.init()), not a "
                               "worker's")
        _live = Live(Subscription(str(addr)), client=client)
    return _live


def live_if_running() -> Live | None:
    """The live model when this process has a cluster, else None; never starts one
    (what the views' pump thread calls: a ``shutdown`` on the shell may race it)."""
    client = api._Session.client
    if client is None or client.closed or not api.is_initialized():
        return None
    return _live_for(client)


@atexit.register
def _close() -> None:
    global _live
    if _live is not None:
        _live.close()
        _live = None
