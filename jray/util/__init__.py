"""Utilities built on the public API: tree reduction (and actor pools, queues)."""

from __future__ import annotations

from jray.util.tree_reduce import tree_reduce

__all__ = ["tree_reduce"]
