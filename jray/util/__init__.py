"""Utilities built on the public API: tree reduction, actor pools, queues.

``jray.util.queue.Queue`` (with its ``Empty``/``Full``) lives in its own
module, as in Ray: ``from jray.util.queue import Queue``.
"""

from __future__ import annotations

from jray.util import queue
from jray.util.actor_pool import ActorPool
from jray.util.tree_reduce import tree_reduce

__all__ = ["ActorPool", "queue", "tree_reduce"]
