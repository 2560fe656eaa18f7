"""Every exception jray raises, in one place.

::

    JrayError
    ├── TaskError                 a task raised; also an instance of the original class
    ├── WorkerCrashedError        the worker process died while running the task
    ├── TaskCancelledError        jray.cancel() stopped the task
    ├── GetTimeoutError           get(timeout=) expired (also a TimeoutError)
    ├── ObjectLostError           the object's value is gone and cannot be rebuilt
    ├── ObjectStoreFullError      the store cannot make room for an object
    ├── ActorError
    │   └── ActorDiedError        the actor's process died or its constructor failed
    ├── SerializationError        a value could not be pickled or unpickled
    ├── ClusterError              the cluster could not start or went away
    └── InitError                 init() called twice, or an API used before init()

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


__all__ = [
    "ActorDiedError",
    "ActorError",
    "ClusterError",
    "GetTimeoutError",
    "InitError",
    "JrayError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "WorkerCrashedError",
]
