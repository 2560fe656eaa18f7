"""Wire protocol: every message type exchanged between jray processes.

This is the only place where op codes are defined. A message is a plain tuple
``(OP, field, ...)``; a ZeroMQ frame carries a *batch* (a list of messages)
pickled with protocol 5. Plain tuples are used instead of dataclasses because
they pickle several times faster, and the per-task budget is a few microseconds.
Each op below documents its fields in order; the ``*Msg`` aliases name them
for readers and for mypy.

Object locations (``Loc``) say where an object's bytes are:

- ``(LOC_INLINE, data: bytes)``  the pickled value itself, small objects;
- ``(LOC_SHM, name: str, size: int, node_id: bytes)``  a shared-memory segment;
- ``(LOC_ERROR, data: bytes)``  a pickled exception that ``get`` raises;
- ``(LOC_SPILLED, path: str, offset: int, size: int, node_id: bytes)``  spilled to disk;
- ``(LOC_VIEW, data: bytes, [(segment, buffer index, start, nbytes), ...], [base oid, ...],
  node_id)``  a pickle stream whose buffers are slices of other objects' segments (a task
  result that is a view of an argument); the object holds its bases while it lives.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

# --- object locations -------------------------------------------------------
LOC_INLINE = 0
LOC_SHM = 1
LOC_ERROR = 2
#: (LOC_SPILLED, path, offset, size, node_id)  the segment's bytes in a spill file
LOC_SPILLED = 3
#: (LOC_VIEW, data, [(segment, buffer index, start, nbytes), ...], [base oid, ...], node_id)
LOC_VIEW = 4

Loc = tuple[Any, ...]
Msg = tuple[Any, ...]

# --- client (driver or worker acting as owner) -> head -----------------------
#: (SUBMIT, TaskSpec)
SUBMIT = 1
#: (PUT, oid, loc, contained_oids)  register an object created by ``put``;
#: the object keeps the refs pickled inside it alive while it exists
PUT = 2
#: (SUBSCRIBE, [oid, ...])  send OBJECT_READY for each oid once it exists
SUBSCRIBE = 3
#: (CANCEL, oid, force, recursive)  cancel the task that produces oid (and the
#: tasks it submitted, recursively, when ``recursive``)
CANCEL = 4
#: (FREE, [oid, ...])  the owner holds no reference any more
FREE = 5
#: (STATE, request_id, kind, arg)  a state query; reply STATE_REPLY
STATE = 6
#: (HELLO, kind, pid)  first message of a driver; kind is "driver"
HELLO = 7
#: (SHUTDOWN,)  driver asks the whole cluster to stop
SHUTDOWN = 8
#: (BORROW, [oid, ...])  this process now holds refs it does not own
BORROW = 9
#: (UNBORROW, [oid, ...])  it holds them no longer
UNBORROW = 10
#: (RESERVE, request_id, oid, size, node_id)  ask for room before writing a segment
RESERVE = 11
#: (LOST, oid, loc_seen[, reader's node_id])  the object's bytes were not where
#: loc_seen says (on another machine's node: the head has the reader's node pull it)
LOST = 12
#: (UNRESERVE, oid, node_id)  a granted (or still pending) reservation that will not be
#: written (the write failed or the writer stopped waiting)
UNRESERVE = 13
#: (EVENTS_SUBSCRIBE, max_batch)  send this client EVENTS_SNAPSHOT, then EVENTS_DELTA
#: messages (one at a time: each waits for the EVENTS_ACK of the one before)
EVENTS_SUBSCRIBE = 14
#: (EVENTS_ACK, seq)  the subscriber has taken every event up to seq; send more
EVENTS_ACK = 15
#: (EVENTS_UNSUBSCRIBE,)
EVENTS_UNSUBSCRIBE = 16
#: (DRIVER_EXIT,)  a driver that joined a cluster leaves: end what it owned
#: (see ``driver_exit``)
DRIVER_EXIT = 17
#: (DRIVER_ALIVE, driver identity)  a joined driver's head watch, every 0.5 s: a
#: driver not vouched for in ``driver_exit.SILENCE_S`` is taken to have exited
DRIVER_ALIVE = 18

# --- worker -> head ----------------------------------------------------------
#: (WORKER_READY, node_id, pid, result_addr)
WORKER_READY = 20
#: (TASK_DONE, tid, [(oid, loc), ...], status, start_time, end_time,
#:  [(oid, [contained oid, ...]), ...] for results that hold refs)
#: status: DONE_OK, DONE_ERROR (application error), DONE_RETRY (asks for a retry)
TASK_DONE = 21
#: (BLOCKED, [tid, ...])  worker waits in ``get``; returns the tids it had queued
BLOCKED = 22
#: (UNBLOCKED,)
UNBLOCKED = 23
#: (RETURN_TASKS, [tid, ...])  tasks the worker received but will not run
RETURN_TASKS = 24

DONE_OK = 0
DONE_ERROR = 1
DONE_RETRY = 2

# --- node daemon -> head -----------------------------------------------------
#: (NODE_REGISTER, node_id, resources: dict[str, float], hostname, pid[, store domain,
#:  object server address])  the last two only on TCP clusters (see ``pulls``)
NODE_REGISTER = 30
#: (WORKER_DIED, worker_id, exitcode)  exitcode < 0 means killed by signal -exitcode
WORKER_DIED = 31
#: (WORKER_SPAWNED, worker_id, pid)
WORKER_SPAWNED = 32
#: (SPILLED, node_id, [(oid, spilled_loc), ...], [oid refused because mapped, ...],
#:  [oid not spilled because writing failed, ...], error: str | None)
SPILLED = 33
#: (RESTORED, node_id, count)  a reader read spilled objects back
RESTORED = 34
#: (POOL_STATE, node_id, [size, ...], POOL messages handled)  the node's pool now
POOL_STATE = 35
#: (HEARTBEAT, node_id)  the node is alive (every ``HEARTBEAT_S``; answered in kind)
HEARTBEAT = 36
#: (PULLED, node_id, oid, loc | None, error: str | None)  a PULL_OBJECT finished
PULLED = 37
#: seconds between a node's heartbeats; a TCP head declares a node lost after
#: ``NODE_TIMEOUT_S`` without a frame from it
HEARTBEAT_S = 0.5
NODE_TIMEOUT_S = 4.0

# --- head -> worker ----------------------------------------------------------
#: (EXECUTE, ExecSpec)
EXECUTE = 40
#: (CANCEL_QUEUED, tid)  drop tid if it has not started
CANCEL_QUEUED = 41
#: (EXIT,)  the worker should exit (idle reaping or shutdown)
EXIT = 42

# --- head -> node daemon -----------------------------------------------------
#: (SPAWN_WORKERS, count)
SPAWN_WORKERS = 50
#: (SIGNAL_WORKER, worker_id, signum)
SIGNAL_WORKER = 51
#: (UNLINK, [shm_name, ...])  free shared memory of collected objects
UNLINK = 52
#: (NODE_EXIT,)
NODE_EXIT = 53
#: (SPILL, [(oid, shm_name, size), ...])  move these segments to disk
SPILL = 54
#: (SPILL_FREE, [(path, size), ...])  spilled bytes nobody needs any more
SPILL_FREE = 55
#: (POOL, [shm_name, ...])  like UNLINK, but keep unmapped segments for reuse
POOL = 56
#: (POOL_TRIM,)  unlink every pooled segment (the store needs the room)
POOL_TRIM = 57
#: (NODE_REJOIN,)  the head declared this node lost: drop everything, register anew
NODE_REJOIN = 58
#: (PULL_OBJECT, oid, loc, source object server address)  copy the object into this
#: node's store from the node serving it (answered with PULLED)
PULL_OBJECT = 59
#: (HEARTBEAT,)  head -> node: the answer to a node's HEARTBEAT

# --- head or worker -> client -------------------------------------------------
#: (OBJECT_READY, oid, loc)
OBJECT_READY = 60
#: (WARN, text)
WARN = 61
#: (STATE_REPLY, request_id, payload)
STATE_REPLY = 62
#: (RESERVED, request_id, error_loc | None)
RESERVED = 64
#: (TASK_OUTPUT, tid, task_name, pid, stream, text)  worker -> the driver's output socket;
#: stream is "stdout" or "stderr"
TASK_OUTPUT = 63
#: (EVENTS_SNAPSHOT, seq, snapshot)  the head's tables as of event seq (see ``event_feed``)
EVENTS_SNAPSHOT = 65
#: (EVENTS_DELTA, [event, ...], store)  events in order, each (seq, time, kind, id, detail),
#: and every node's store summary now
EVENTS_DELTA = 66

# --- leases: direct task submission (owner -> leased worker) -------------------
# An owner leases a worker for one resource shape from the head and sends it
# tasks itself (EXECUTE with the lease id as the exec spec's last field); the
# head still records each task (SUBMIT_LEASED, batched) and owns the lease.
#: (LEASE_REQUEST, request_id, demand, node_id)  owner -> head; node_id: the owner's
#: node (b"" if none), where the head grants first
LEASE_REQUEST = 70
#: (LEASE_GRANT, request_id, lease_id | None, worker_addr, gpu_ids)  head -> owner;
#: lease_id None: no worker is free for that shape now
LEASE_GRANT = 71
#: (LEASE_RETURN, lease_id)  owner -> head: no more tasks on it (also the owner's
#: acknowledgement of a LEASE_REVOKED)
LEASE_RETURN = 72
#: (LEASE_REVOKED, lease_id)  head -> owner: send nothing more on it (its worker died,
#: blocked in ``get`` or is needed for queued work); tasks already sent are the head's
LEASE_REVOKED = 73
#: (SUBMIT_LEASED, TaskSpec, lease_id)  owner -> head: this task went to the lease's worker
SUBMIT_LEASED = 74
#: (REVOKE_LEASE, lease_id)  head -> worker: return its queued tasks, run no more of them
REVOKE_LEASE = 75
#: (LEASE_RELEASED, lease_id)  worker -> head: done with that lease (after REVOKE_LEASE)
LEASE_RELEASED = 76
#: (LEASED_DONE, ...)  worker -> head: TASK_DONE's fields, for a task that came on a lease
#: (it may arrive before the owner's SUBMIT_LEASED; the head then holds it until then)
LEASED_DONE = 77

# Ops 100-199 are reserved for actors (see ``actor_protocol``); extensions register
# their handlers with ``Scheduler.register`` and ``CoreClient.handlers``.

# --- generator streams (see ``generators``), direct between the two processes --------
#: (GEN_ITEM, key, index, oid, loc, ack_addr, registered)  item ``index`` of the stream
#: ``key`` (the call's return id); ``registered``: the producer told the head of it
GEN_ITEM = 80
#: (GEN_ACK, key, consumed)  the consumer took ``consumed`` items (backpressure only)
GEN_ACK = 81

# --- task spec layout ---------------------------------------------------------
# TaskSpec = (tid, func_id, func_blob | None, name, args_blob, deps, return_ids,
#             resources, max_retries, retry_exceptions, owner_addr, output_addr,
#             nested_refs, tag, parent)   nested_refs: refs pickled inside the arguments;
#             tag: where it was submitted from, a cell's (cell_id, execution_count) or None;
#             parent: the id of the task that submitted it (None from a driver), so that
#             cancel(recursive=True) finds it even before the head has heard of the parent
#             (a parent on a lease is recorded late)
T_ID, T_FUNC_ID, T_FUNC_BLOB, T_NAME, T_ARGS, T_DEPS, T_RETURNS = range(7)
T_RESOURCES, T_MAX_RETRIES, T_RETRY_EXC, T_OWNER, T_OUTPUT, T_NESTED, T_TAG = range(7, 14)
T_PARENT = 14
TaskSpec = tuple[Any, ...]

# ExecSpec = (tid, func_id, func_blob | None, name, args_blob, dep_locs,
#             return_ids, owner_addr, gpu_ids, retries_left, retry_exceptions,
#             output_addr, resources[, lease_id])   resources: the task's demand
#             (``get_runtime_context().get_assigned_resources()``); lease_id: only on
#             tasks sent on a lease
E_ID, E_FUNC_ID, E_FUNC_BLOB, E_NAME, E_ARGS, E_DEP_LOCS = range(6)
E_RETURNS, E_OWNER, E_GPU_IDS, E_RETRIES_LEFT, E_RETRY_EXC, E_OUTPUT = range(6, 12)
E_RESOURCES, E_LEASE = 12, 13
ExecSpec = tuple[Any, ...]

_PROTO = pickle.HIGHEST_PROTOCOL


def pack(batch: list[Msg]) -> bytes:
    """Encode a batch of messages as one frame."""
    return pickle.dumps(batch, _PROTO)


def unpack(frame: bytes | memoryview) -> list[Msg]:
    """Decode one frame into its batch of messages."""
    batch: list[Msg] = pickle.loads(frame)
    return batch


class IdGen:
    """Unique 16-byte ids: an 8-byte per-process random prefix and a counter.

    Task return objects reuse their task's id with the return index in the
    last two bytes, so the object id tells which task made it.
    """

    __slots__ = ("_prefix", "_n")

    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        self._n = 0

    def task_id(self) -> bytes:
        self._n += 1
        return self._prefix + self._n.to_bytes(6, "little") + b"\0\0"

    def put_id(self) -> bytes:
        self._n += 1
        return self._prefix + self._n.to_bytes(6, "little") + b"\xff\xff"


def return_id(tid: bytes, index: int) -> bytes:
    """Object id of return value ``index`` (0-based) of task ``tid``."""
    return tid[:14] + (index + 1).to_bytes(2, "little")


def task_of(oid: bytes) -> bytes | None:
    """The task id that produces ``oid``, or None for objects made by ``put``."""
    if oid[14:] == b"\xff\xff":
        return None
    return oid[:14] + b"\0\0"
