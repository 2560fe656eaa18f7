"""Handle lifetimes across processes: the lifetime object of an actor.

An actor that is not detached exits once its creator's handle and every copy
of it are gone. Copies in the creating process are counted there
(``actor_client``); the first handle that leaves the process makes the actor's
lifetime object (``actor_protocol.lifetime_id``), owned by the creator, and
every pickled copy carries a ref to it, so the head counts the copies like
borrowed refs. When the head collects the object, its actor table tells the
actor to exit (``ACTOR_SHUTDOWN``).
"""

from __future__ import annotations

from jray._private import actor_protocol as A
from jray._private import protocol as P
from jray._private import serialization as S
from jray._private.core import CoreClient
from jray._private.object_ref import ObjectRef


def lifetime_ref(core: CoreClient, actor_id: bytes) -> ObjectRef:
    """The owner's ref to the lifetime object of ``actor_id``, made (and made known to
    the head) the first time a counted handle leaves this process. Every copy of the
    handle carries it, so the head counts the copies as borrowers; once the owner's
    handle and every copy are gone, the head collects the object and ends the actor."""
    oid = A.lifetime_id(actor_id)
    with core.lock:
        core.cache[oid] = (P.LOC_INLINE, S.dumps(None))
        core.owned.add(oid)
        core._register(oid)
        return ObjectRef(oid, core.addr)


def hosted_actor() -> bytes | None:
    """The id of the actor this process hosts (None in a driver or a task worker)."""
    from jray.runtime_context import _actor_process

    hosted = _actor_process()
    return bytes.fromhex(hosted[0]) if hosted is not None else None
