"""Roles of the head's peers and the ops each may send.

A peer states its role in its handshake (``auth``); the head then accepts from it
only the ops of that role and drops (and counts) any other. So a worker cannot
``SHUTDOWN`` the cluster, a driver cannot register a node or a worker, and a live
view can only subscribe and query (and, as a joined driver's head watch, vouch
that its driver lives: ``DRIVER_ALIVE``). A new op sent to the head must be listed here
under the roles that send it, or the head drops it.
"""

from __future__ import annotations

from jray._private import actor_protocol as A
from jray._private import protocol as P

DRIVER = 1
WORKER = 2
NODE = 3
VIEWER = 4

NAMES = {DRIVER: "driver", WORKER: "worker", NODE: "node", VIEWER: "viewer"}

#: the role of a head connection by the first byte of its ZeroMQ identity
BY_PREFIX = {b"d"[0]: DRIVER, b"w"[0]: WORKER, b"A"[0]: WORKER, b"n"[0]: NODE,
             b"v"[0]: VIEWER, b"s"[0]: VIEWER}

_QUERY = {P.STATE, P.EVENTS_SUBSCRIBE, P.EVENTS_ACK, P.EVENTS_UNSUBSCRIBE}

#: what any owner of objects and tasks sends (drivers, and workers for nested tasks)
_OWNER = _QUERY | {
    P.SUBMIT, P.PUT, P.SUBSCRIBE, P.CANCEL, P.FREE, P.BORROW, P.UNBORROW, P.RESERVE,
    P.LOST, P.UNRESERVE, P.RESTORED, P.LEASE_REQUEST, P.LEASE_RETURN, P.SUBMIT_LEASED,
    A.ACTOR_CREATE, A.ACTOR_LOOKUP, A.ACTOR_REQUEST, A.ACTOR_KILL, A.ACTOR_EXPECT,
    A.ACTOR_CALLS_FAILED,
}

ALLOWED: dict[int, frozenset[int]] = {
    DRIVER: frozenset(_OWNER | {P.HELLO, P.SHUTDOWN, P.DRIVER_EXIT}),
    WORKER: frozenset(_OWNER | {
        P.WORKER_READY, P.TASK_DONE, P.BLOCKED, P.UNBLOCKED, P.RETURN_TASKS,
        P.LEASE_RELEASED, P.LEASED_DONE,
        A.ACTOR_HELLO, A.ACTOR_ALIVE, A.ACTOR_INIT_FAILED, A.ACTOR_RESULTS,
        A.ACTOR_CHECKPOINT, A.ACTOR_EXITING, A.ACTOR_RETRIED,
    }),
    NODE: frozenset({
        P.NODE_REGISTER, P.WORKER_DIED, P.WORKER_SPAWNED, P.SPILLED, P.RESTORED,
        P.POOL_STATE, P.HEARTBEAT, A.ACTOR_PROC_DIED, P.STATE, P.PULLED,
    }),
    VIEWER: frozenset(_QUERY | {P.DRIVER_ALIVE}),
}


def for_identity(ident: bytes) -> int:
    """The role a connection with this identity has (ValueError if none)."""
    role = BY_PREFIX.get(ident[0]) if ident else None
    if role is None:
        raise ValueError(f"no jray role for a head connection with identity {ident!r}")
    return role
