"""Utilities built on the public API: tree reduction, actor pools, queues, and
``register_serializer``/``deregister_serializer`` (custom serializers of a class).

``jray.util.queue.Queue`` (with its ``Empty``/``Full``) lives in its own
module, as in Ray: ``from jray.util.queue import Queue``.
"""

from __future__ import annotations

from jray._private.serialization import deregister_serializer, register_serializer
from jray.util import queue
from jray.util.actor_pool import ActorPool
from jray.util.tree_reduce import tree_reduce

__all__ = ["ActorPool", "deregister_serializer", "queue", "register_serializer", "tree_reduce"]
