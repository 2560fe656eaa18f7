"""Actor messages (ops 100-199) and the ids they use.

Like ``protocol``, every message is a plain tuple ``(OP, field, ...)`` and a
frame carries a batch of them. Who sends what::

    caller ──ACTOR_CREATE / LOOKUP / KILL / REQUEST / EXPECT / CALLS_FAILED──▶ head
    head   ──ACTOR_STATE / ACTOR_REPLY──▶ caller (every process holding a handle)
    head   ──ACTOR_SPAWN / ACTOR_SIGNAL──▶ node daemon ──ACTOR_PROC_DIED──▶ head
    actor  ──ACTOR_HELLO / ALIVE / INIT_FAILED / RESULTS / CHECKPOINT / EXITING──▶ head
    head   ──ACTOR_INIT / ACTOR_SHUTDOWN──▶ actor
    caller ──ACTOR_CALL / ACTOR_EXIT_REQ──▶ actor      (direct, one PUSH socket per actor)
    caller ──ACTOR_CANCEL──▶ actor's control socket     (direct, read by its own thread)
    actor  ──ACTOR_DONE──▶ caller                      (direct, to the caller's PULL socket)

An actor call's return objects get ids whose last two bytes carry the marker
``0xC0`` in the high byte (task returns use small indices, ``put`` uses
``0xffff``), so any process can tell an actor result from a task result.
"""

from __future__ import annotations

from typing import Any, TypedDict

# --- caller -> head ------------------------------------------------------------
#: (ACTOR_CREATE, ActorSpec, request_id)  request_id > 0 asks for an ACTOR_REPLY
ACTOR_CREATE = 100
#: (ACTOR_LOOKUP, actor_id)  subscribe to the actor's state; answered by ACTOR_STATE
ACTOR_LOOKUP = 101
#: (ACTOR_REQUEST, request_id, kind, arg)  "get_named" (name, namespace) | "list" None
#: | "get_by_id" actor_id | "barrier" None (answered after all the sender sent before)
ACTOR_REQUEST = 102
#: (ACTOR_KILL, actor_id, no_restart)
ACTOR_KILL = 103
#: (ACTOR_EXPECT, [oid, ...])  results of calls this caller sent: track them as pending
ACTOR_EXPECT = 104
#: (ACTOR_CALLS_FAILED, [(oid, error_loc), ...])  calls that died with their actor
ACTOR_CALLS_FAILED = 105

# --- actor process -> head ------------------------------------------------------
#: (ACTOR_HELLO, actor_id, incarnation)  the process started; answered by ACTOR_INIT
ACTOR_HELLO = 110
#: (ACTOR_ALIVE, actor_id, incarnation, call_addr, pid)
ACTOR_ALIVE = 111
#: (ACTOR_INIT_FAILED, actor_id, incarnation, error_loc)  the constructor raised
ACTOR_INIT_FAILED = 112
#: (ACTOR_RESULTS, [(oid, loc, owner_ident, contained_oids), ...])  finished calls
ACTOR_RESULTS = 113
#: (ACTOR_CHECKPOINT, actor_id, incarnation, loc)  the newest checkpointed state
ACTOR_CHECKPOINT = 114
#: (ACTOR_EXITING, actor_id, incarnation, reason)  exits on purpose: do not restart
ACTOR_EXITING = 115
#: (ACTOR_RETRIED, actor_id, incarnation, call_key)  the call raised an exception it
#: retries and runs again: one of its retries is used (counted across restarts)
ACTOR_RETRIED = 116

# --- head -> actor process ------------------------------------------------------
#: (ACTOR_INIT, ActorSpec | None, checkpoint_loc | None, {call_key: retries used})
#: None spec: exit at once; the dict: exception retries earlier incarnations used
ACTOR_INIT = 120
#: (ACTOR_SHUTDOWN, reason)
ACTOR_SHUTDOWN = 121

# --- head <-> node daemon -------------------------------------------------------
#: (ACTOR_SPAWN, actor_id, incarnation, gpu_ids, class_name)
ACTOR_SPAWN = 130
#: (ACTOR_SIGNAL, actor_id, incarnation, signum)
ACTOR_SIGNAL = 131
#: (ACTOR_PROC_DIED, actor_id, incarnation, exitcode)  < 0: killed by signal -exitcode
ACTOR_PROC_DIED = 132

# --- head -> caller -------------------------------------------------------------
#: (ACTOR_STATE, actor_id, state, incarnation, call_addr, cause_loc | None)
ACTOR_STATE = 140
#: (ACTOR_REPLY, request_id, ok: bool, payload)
ACTOR_REPLY = 141

# --- caller <-> actor (direct) --------------------------------------------------
#: (ACTOR_CALL, method, args_blob | None, deps | None, returns, caller_addr, caller_ident)
#: deps: [(oid, loc | None), ...] for top-level ObjectRef arguments (``ArgRef`` i);
#: args_blob None with deps: deps[0] holds the (args, kwargs) themselves (large).
ACTOR_CALL = 150
#: (ACTOR_EXIT_REQ, reason)  after the calls sent before it: exit (handles went away)
ACTOR_EXIT_REQ = 151
#: (ACTOR_DONE, actor_id, [(oid, loc), ...])
ACTOR_DONE = 152
#: (ACTOR_CANCEL, [call_key, ...][, interrupt])  to the actor's control socket
#: (``control_addr``; call_key: first result id): drop these calls if not started; a
#: running one sees ``is_canceled()`` (Ray's cancel), or, with the optional trailing
#: ``interrupt`` true (the notebook's interrupt), is interrupted (``actor_executor``)
ACTOR_CANCEL = 153

# --- actor states ---------------------------------------------------------------
PENDING = "PENDING_CREATION"
RESTARTING = "RESTARTING"
ALIVE = "ALIVE"
DEAD = "DEAD"

C_METHOD, C_ARGS, C_DEPS, C_RETURNS, C_CALLER, C_IDENT = range(1, 7)


class ActorMeta(TypedDict):
    """What a handle needs to make calls: travels with pickled handles."""

    class_name: str
    methods: dict[str, int]  # method name -> num_returns
    max_task_retries: int
    is_async: bool
    #: method name -> its parameters (``signature.Params``, ``self`` dropped; None: unknown)
    params: dict[str, Any]
    #: methods whose ``@jray.method(max_task_retries=)`` overrides the actor's
    retries: dict[str, int]
    #: ``concurrency_groups``: group name -> how many of its calls run at once
    groups: dict[str, int]
    #: ``max_pending_calls``: calls without results one process may have (-1: no limit)
    max_pending_calls: int


class ActorSpec(TypedDict):
    """Everything needed to (re)start one actor; kept by the head for restarts."""

    actor_id: bytes
    meta: ActorMeta
    class_blob: bytes
    args: tuple[str, Any]  # ("inline", blob) or ("ref", pickled ObjectRef)
    name: str | None
    namespace: str
    demand: dict[str, float]
    hold: bool  # hold the demand while alive (explicit resources) or only place with it
    max_restarts: int  # -1: forever
    max_concurrency: int
    checkpoint_interval: int  # calls; 0: off
    checkpoint_interval_s: float  # seconds; 0: off
    detached: bool
    get_if_exists: bool
    output_addr: str
    #: the actor whose process created this one (None: a driver or a task did): an
    #: actor that is not detached dies with the process of its owner, as in Ray
    owner_actor: bytes | None


_MARK = 0xC0


def result_id(call_id: bytes, index: int) -> bytes:
    """Object id of return value ``index`` of the actor call ``call_id``."""
    return call_id[:14] + bytes(((index + 1) & 0xFF, _MARK | ((index + 1) >> 8)))


def call_key(oid: bytes) -> bytes:
    """The key of the call that returns ``oid`` (its first return id)."""
    return result_id(oid, 0)


def control_addr(call_addr: str) -> str:
    """The address of an actor's control socket (cancels), next to its call socket
    (``tcp://``: the next port)."""
    if call_addr.startswith("tcp://"):
        host, _, port = call_addr.rpartition(":")
        return f"{host}:{int(port) + 1}"
    return call_addr[: -len(".call.sock")] + ".ctl.sock" if call_addr.endswith(
        ".call.sock") else call_addr + ".ctl"


#: the last two bytes of an actor's lifetime object (``lifetime_id``); its high byte is
#: not an actor result's marker, and as a task return index (0xbffe) it never occurs
LIFETIME_TAG = b"\xfe\xbf"


def lifetime_id(actor_id: bytes) -> bytes:
    """The id of the object that stands for the counted handles of an actor.

    Its owner (the actor's creator) makes it when a handle first leaves the creating
    process; every pickled handle carries a ref to it, so the head counts the copies
    the way it counts borrowed refs. When the head collects it, the actor exits.
    """
    return actor_id[:14] + LIFETIME_TAG


def is_actor_result(oid: bytes) -> bool:
    return oid[15] & 0xC0 == _MARK and oid[14:] != b"\xff\xff"


def signal_text(exitcode: int) -> str:
    if exitcode < 0:
        import signal

        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name} (signal {-exitcode})"
    return f"exited with code {exitcode}"
