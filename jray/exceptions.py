"""Every exception jray raises, in one place.

::

    JrayError                     (Ray: RayError)
    ├── TaskError                 a task raised; also an instance of the original class
    │                             (Ray: RayTaskError)
    ├── WorkerCrashedError        the worker process died while running the task
    ├── TaskCancelledError        jray.cancel() stopped the task
    ├── GetTimeoutError           get(timeout=) expired (also a TimeoutError)
    ├── ObjectLostError           the object's value is gone and cannot be rebuilt
    │   ├── ObjectFetchTimedOutError
    │   ├── OwnerDiedError
    │   ├── ReferenceCountingAssertionError (also an AssertionError)
    │   └── ObjectReconstructionFailedError
    │       ├── ObjectReconstructionFailedMaxAttemptsExceededError
    │       └── ObjectReconstructionFailedLineageEvictedError
    ├── ObjectStoreFullError      the store cannot make room for an object
    ├── ActorClassInheritanceException  a class derived from an actor class (TypeError)
    ├── ActorError                (Ray: RayActorError)
    │   ├── ActorDiedError        the actor's process died or its constructor failed
    │   └── ActorUnavailableError
    ├── SerializationError        a value could not be pickled or unpickled
    ├── ClusterError              the cluster could not start or went away
    │   │                         (Ray: RaySystemError)
    │   └── NodeDiedError, LocalRayletDiedError
    ├── InitError                 init() called twice, or an API used before init()
    ├── ArgumentError             a bad argument to get/wait/...: both a TypeError and
    │                             a ValueError (jray raised the one, Ray the other)
    └── Ray's other names, so that ``except`` clauses written for Ray work:
        OutOfMemoryError, OutOfDiskError, AsyncioActorExit, CrossLanguageError,
        TaskUnschedulableError, ActorUnschedulableError, PendingCallsLimitExceeded,
        PlasmaObjectNotAvailable, RuntimeEnvSetupError, TaskPlacementGroupRemoved,
        ActorPlacementGroupRemoved, UnserializableException

Ray's names map to jray's as follows. ``RayError``, ``RayTaskError``,
``RayActorError`` and ``RaySystemError`` are aliases of ``JrayError``,
``TaskError``, ``ActorError`` and ``ClusterError`` (the same class, so each
catches exactly what the jray name catches); ``WorkerCrashedError``,
``TaskCancelledError``, ``GetTimeoutError``, ``ObjectLostError``,
``ObjectStoreFullError`` and ``ActorDiedError`` carry the same names in both.
The rest are classes of their own, placed where Ray places them; jray raises
few of them today (it has no raylet, placement groups or runtime environments),
but code that catches them runs unchanged.

Remote tracebacks are kept: ``TaskError.traceback_str`` holds the text of the
traceback in the worker, and it is printed with the error.
"""

from __future__ import annotations

from typing import Any, cast


class JrayError(Exception):
    """Base class of every jray error."""


class TaskError(JrayError):
    """A task raised an exception.

    ``get`` raises an instance of a class derived from both ``TaskError`` and
    the original exception's class, so ``except ValueError`` still works.

    Attributes
    ----------
    function_name: name of the remote function that raised.
    cause: the original exception, when it could be pickled.
    traceback_str: the formatted traceback in the worker.
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None = None,
        cause_cls: type | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.cause_cls = cause_cls if cause_cls is not None else type(cause)
        super().__init__(function_name, traceback_str, cause, cause_cls)

    def __str__(self) -> str:
        return (
            f"task {self.function_name}() failed; remote traceback:\n"
            f"{self.traceback_str.rstrip()}"
        )

    def as_instanceof_cause(self) -> TaskError:
        """Return a copy whose class also derives from the cause's class."""
        cls = self.cause_cls
        if cls is None or not isinstance(cls, type) or issubclass(cls, TaskError):
            return self
        if not issubclass(cls, BaseException) or issubclass(cls, _NEVER_DERIVED):
            return self
        try:
            derived = _derived_class(cls)
            err = cast(TaskError, Exception.__new__(derived))
            # Not TaskError.__init__: its super().__init__ would reach the user's
            # class, whose __init__ may take other arguments (e.g. ``MyError(code)``).
            if self.cause is not None:
                err.__dict__.update(getattr(self.cause, "__dict__", {}))
                err.args = self.cause.args
                if isinstance(self.cause, SystemExit):  # a C slot, not in __dict__
                    cast(SystemExit, err).code = self.cause.code
            err.function_name = self.function_name
            err.traceback_str = self.traceback_str
            err.cause = self.cause
            err.cause_cls = cls
            err.__cause__ = self.cause
            return err
        except TypeError:  # classes with incompatible layouts (e.g. some C types)
            return self

    def make_dual_exception_instance(self) -> TaskError:
        """Ray's other name of ``as_instanceof_cause``."""
        return self.as_instanceof_cause()


#: Interrupts stay jray's own errors; SystemExit and the rest keep their class.
_NEVER_DERIVED = (KeyboardInterrupt, GeneratorExit)
_DERIVED: dict[type, type] = {}


def _derived_class(cls: type) -> type:
    derived = _DERIVED.get(cls)
    if derived is None:
        derived = type(
            f"TaskError({cls.__name__})",
            (TaskError, cls),
            {"__init__": _noop_init, "__reduce__": _reduce_derived, "__str__": TaskError.__str__},
        )
        _DERIVED[cls] = derived
    return derived


def _noop_init(self: Any, *args: Any, **kwargs: Any) -> None:
    pass


def _reduce_derived(self: TaskError) -> tuple[Any, ...]:
    args = (self.function_name, self.traceback_str, self.cause, self.cause_cls)
    return (_rebuild_task_error, args)


def _rebuild_task_error(
    name: str, tb: str, cause: BaseException | None, cls: type | None
) -> TaskError:
    return TaskError(name, tb, cause, cls).as_instanceof_cause()


class WorkerCrashedError(JrayError):
    """The worker process running the task died (exit, signal, segfault)."""


class TaskCancelledError(JrayError):
    """The task was cancelled with ``jray.cancel``."""


class GetTimeoutError(JrayError, TimeoutError):
    """``get`` or ``wait`` did not finish within its timeout."""


class ObjectLostError(JrayError):
    """An object's value is gone and cannot be reconstructed."""


class ObjectStoreFullError(JrayError, MemoryError):
    """The object store cannot make room for a new object."""


class ActorError(JrayError):
    """Base class of actor failures."""


class ActorDiedError(ActorError):
    """The actor's process died, or its constructor raised.

    Attributes
    ----------
    exitcode: the process's exit code (negative: killed by that signal), if it died.
    traceback_str: the constructor's remote traceback, if the constructor raised.
    """

    def __init__(self, message: str = "", *, exitcode: int | None = None,
                 traceback_str: str = "") -> None:
        super().__init__(message)
        self.exitcode = exitcode
        self.traceback_str = traceback_str


class SerializationError(JrayError, TypeError):
    """A value could not be pickled (driver side) or unpickled (worker side)."""


class ClusterError(JrayError, RuntimeError):
    """The cluster could not start, or its head went away."""


class InitError(JrayError, RuntimeError):
    """``init`` was called twice, or the API was used in a wrong state."""


class ArgumentError(JrayError, TypeError, ValueError):
    """A bad argument to an API call (``get`` of something that is not a ref, ...).

    Both a ``TypeError`` (what jray raised before) and a ``ValueError`` (what Ray
    raises), so ``except`` clauses written for either keep working.
    """


class ActorClassInheritanceException(JrayError, TypeError):
    """A class statement derived a class from an actor class (as in Ray, not supported)."""


class ActorUnavailableError(ActorError):
    """The actor cannot take calls for now but may later (e.g. it is restarting)."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching an object's value from another node timed out."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object (submitted its task or put it) died."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """An object was freed although a reference to it was still in use."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object was lost and rebuilding it from its lineage failed."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectReconstructionFailedError):
    """The object was lost and its task has no retries left to rebuild it."""


class ObjectReconstructionFailedLineageEvictedError(ObjectReconstructionFailedError):
    """The object was lost and the record of how to rebuild it is gone."""


class NodeDiedError(ClusterError):
    """A node of the cluster died."""


class LocalRayletDiedError(ClusterError):
    """The local node daemon (Ray: raylet) of the task died."""


class OutOfMemoryError(JrayError):
    """The node ran low on memory and a task or actor was stopped to free some."""


class OutOfDiskError(JrayError):
    """The local disk is full (objects could not be spilled)."""


class AsyncioActorExit(JrayError):
    """An async actor called ``exit_actor()`` (raised inside the actor only)."""


class CrossLanguageError(JrayError):
    """An error from a task in another language (jray runs Python only)."""


class TaskUnschedulableError(JrayError):
    """The task cannot be scheduled (e.g. its scheduling constraints cannot be met)."""


class ActorUnschedulableError(JrayError):
    """The actor cannot be scheduled (e.g. its scheduling constraints cannot be met)."""


class PendingCallsLimitExceeded(JrayError):
    """An actor handle has more pending calls than its ``max_pending_calls``."""


class PlasmaObjectNotAvailable(JrayError):
    """The object is not available in the local store (Ray-internal condition)."""


class RuntimeEnvSetupError(JrayError):
    """The runtime environment of a task or actor could not be set up."""


class TaskPlacementGroupRemoved(JrayError):
    """The placement group of the task was removed."""


class ActorPlacementGroupRemoved(JrayError):
    """The placement group of the actor was removed."""


class UnserializableException(JrayError):
    """A remote exception that could not be unpickled where it was caught."""


#: Ray's names that are jray's own classes under another name (see the module docstring).
RayError = JrayError
RayTaskError = TaskError
RayActorError = ActorError
RaySystemError = ClusterError


__all__ = [
    "ActorClassInheritanceException",
    "ActorDiedError",
    "ActorError",
    "ActorPlacementGroupRemoved",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "ArgumentError",
    "AsyncioActorExit",
    "ClusterError",
    "CrossLanguageError",
    "GetTimeoutError",
    "InitError",
    "JrayError",
    "LocalRayletDiedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedLineageEvictedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectStoreFullError",
    "OutOfDiskError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "PlasmaObjectNotAvailable",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "ReferenceCountingAssertionError",
    "RuntimeEnvSetupError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "TaskPlacementGroupRemoved",
    "TaskUnschedulableError",
    "UnserializableException",
    "WorkerCrashedError",
]
