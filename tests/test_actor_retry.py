"""Actor method ``retry_exceptions`` and ``sys.exit`` in a method, as Ray documents them.

``@ray.method(retry_exceptions=[...])`` (or ``True``) makes a call that raises one of
those exceptions run again, up to ``max_task_retries`` times (the method's own, or the
actor's); ``method.options(retry_exceptions=..., max_task_retries=...)`` overrides both
for one call. ``sys.exit()`` inside a method ends the actor's process: the actor is
restarted (``max_restarts``) and the call retried (``max_task_retries``).
"""

from __future__ import annotations

import sys

import pytest

import jray as ray

pytestmark = pytest.mark.integration


class Flaky(Exception):
    pass


class Other(Exception):
    pass


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n - 1

    def value(self) -> int:
        return self.n


@ray.remote(max_task_retries=2)
class Trouble:
    @ray.method(max_task_retries=4, retry_exceptions=[Flaky])
    def fail_first(self, counter: object, n: int) -> int:
        """Raises Flaky in its first ``n`` runs (counted by ``counter``), then returns."""
        c: int = ray.get(counter.inc.remote())  # type: ignore[attr-defined]
        if c < n:
            raise Flaky(f"run {c}")
        return c

    @ray.method(retry_exceptions=True)
    def inherits(self, counter: object, n: int) -> int:
        """No max_task_retries of its own: the actor's (2) applies."""
        c: int = ray.get(counter.inc.remote())  # type: ignore[attr-defined]
        if c < n:
            raise Other(f"run {c}")
        return c

    def plain(self, counter: object) -> int:
        ray.get(counter.inc.remote())  # type: ignore[attr-defined]
        raise Flaky("no retry_exceptions here")


def test_retried_up_to_max_task_retries(cluster: dict[str, object]) -> None:
    counter, t = Counter.remote(), Trouble.remote()
    assert ray.get(t.fail_first.remote(counter, 4)) == 4  # 4 retries were enough
    assert ray.get(counter.value.remote()) == 5
    counter2 = Counter.remote()
    with pytest.raises(Flaky):
        ray.get(t.fail_first.remote(counter2, 5))  # would need a 5th retry
    assert ray.get(counter2.value.remote()) == 5


def test_the_actors_max_task_retries_applies(cluster: dict[str, object]) -> None:
    counter, t = Counter.remote(), Trouble.remote()
    assert ray.get(t.inherits.remote(counter, 2)) == 2
    counter2 = Counter.remote()
    with pytest.raises(Other):
        ray.get(t.inherits.remote(counter2, 3))
    assert ray.get(counter2.value.remote()) == 3


def test_options_override_for_one_call(cluster: dict[str, object]) -> None:
    counter, t = Counter.remote(), Trouble.remote()
    with pytest.raises(Flaky):
        ray.get(t.fail_first.options(retry_exceptions=False).remote(counter, 1))
    assert ray.get(counter.value.remote()) == 1
    counter2 = Counter.remote()
    assert ray.get(t.fail_first.options(max_task_retries=7).remote(counter2, 7)) == 7
    counter3 = Counter.remote()
    with pytest.raises(Flaky):  # a list that does not name Flaky: not retried
        ray.get(t.fail_first.options(retry_exceptions=[Other]).remote(counter3, 1))
    assert ray.get(counter3.value.remote()) == 1


def test_without_retry_exceptions_nothing_is_retried(cluster: dict[str, object]) -> None:
    counter, t = Counter.remote(), Trouble.remote()
    with pytest.raises(Flaky):
        ray.get(t.plain.remote(counter))
    assert ray.get(counter.value.remote()) == 1


def test_retry_exceptions_is_validated() -> None:
    with pytest.raises(ValueError, match="retry_exceptions"):
        ray.method(retry_exceptions=["Flaky"])


@ray.remote(max_restarts=1, max_task_retries=1)
class Exits:
    def __init__(self, counter: object) -> None:
        self.counter = counter

    def once(self) -> str:
        if ray.get(self.counter.inc.remote()) == 0:  # type: ignore[attr-defined]
            sys.exit(1)
        return "second run"


def test_sys_exit_in_a_method_restarts_the_actor_and_retries(
        cluster: dict[str, object]) -> None:
    counter = Counter.remote()
    a = Exits.remote(counter)
    assert ray.get(a.once.remote(), timeout=60) == "second run"
    assert ray.get(counter.value.remote()) == 2


@ray.remote(max_task_retries=2)
class Streams:
    @ray.method(num_returns="streaming")
    def plain(self, counter: object, script: list[object]) -> object:
        while True:  # each run goes on where the script is
            i = ray.get(counter.inc.remote(), timeout=60)  # type: ignore[attr-defined]
            if isinstance(script[i], BaseException):
                raise script[i]
            yield script[i]
            if i == len(script) - 1:
                return

    @ray.method(num_returns="streaming")
    async def asynchronous(self, counter: object, script: list[object]) -> object:
        while True:  # each run goes on where the script is
            i = await counter.inc.remote()  # type: ignore[attr-defined]
            if isinstance(script[i], BaseException):
                raise script[i]
            yield script[i]
            if i == len(script) - 1:
                return


@pytest.mark.parametrize("method", ["plain", "asynchronous"])
def test_a_generator_method_is_rerun_and_its_caller_skips_the_items_it_has(
        cluster: dict[str, object], method: str) -> None:
    # two failures, two retries (the actor's max_task_retries): the third run finishes
    counter = Counter.remote()
    gen = getattr(Streams.remote(), method).options(retry_exceptions=[Flaky]).remote(
        counter, ["a", Flaky(), "a", Flaky(), "a", "b", "c"])
    assert [ray.get(ref, timeout=60) for ref in gen] == ["a", "b", "c"]
    assert ray.get(counter.value.remote(), timeout=60) == 7
    # three failures: the last one is the stream's end, after the items it had
    counter = Counter.remote()
    gen = getattr(Streams.remote(), method).options(retry_exceptions=[Flaky]).remote(
        counter, ["a", Flaky(), "a", Flaky(), "a", Flaky(), "a", "b"])
    got = []
    with pytest.raises(Flaky):
        for ref in gen:
            got.append(ray.get(ref, timeout=60))
    assert got == ["a"] and ray.get(counter.value.remote(), timeout=60) == 6
    # not a retried exception: no rerun
    counter = Counter.remote()
    gen = getattr(Streams.remote(), method).remote(counter, ["a", Other(), "b"])
    with pytest.raises(Other):
        assert [ray.get(ref, timeout=60) for ref in gen] == ["a"]
    assert ray.get(counter.value.remote(), timeout=60) == 2


@ray.remote(max_restarts=1)
class Unsteady:
    @ray.method(retry_exceptions=[Flaky])
    def act(self, counter: object, script: list[str]) -> int:
        i = ray.get(counter.inc.remote(), timeout=60)  # type: ignore[attr-defined]
        step = script[i] if i < len(script) else "return"
        if step == "raise":
            raise Flaky()
        if step == "exit":
            sys.exit(1)
        return int(i)


@pytest.mark.parametrize("script, outcome", [
    (["exit", "raise", "raise"], Flaky),
    (["raise", "exit", "raise"], Flaky),
    (["raise", "raise", "exit"], ray.exceptions.ActorUnavailableError),
    (["raise", "exit"], 2),
])
def test_exceptions_and_restarts_share_one_retry_budget(
        cluster: dict[str, object], script: list[str], outcome: object) -> None:
    # Ray: max_task_retries=2 is three tries in all, whether a try raised or its
    # actor's process died (the restart counts, as do the exceptions before it)
    counter = Counter.remote()
    ref = Unsteady.remote().act.options(max_task_retries=2).remote(counter, script)
    if isinstance(outcome, int):
        assert ray.get(ref, timeout=60) == outcome
    else:
        with pytest.raises(outcome):  # type: ignore[call-overload]
            ray.get(ref, timeout=60)
    assert ray.get(counter.value.remote(), timeout=60) == min(3, len(script) + 1)
