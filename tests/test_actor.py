"""Actors with real processes: API, ordering, concurrency, refs, names, bad input."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import numpy as np
import pytest

import jray
from jray.exceptions import ActorDiedError, TaskError
from jray.testing import eventually

pytestmark = pytest.mark.integration
T = 30  # every get in this module is bounded


@jray.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.n = start
        self.log: list[Any] = []

    def inc(self, k: int = 1) -> int:
        self.n += k
        return self.n

    def get(self) -> int:
        return self.n

    def append(self, x: Any) -> int:
        self.log.append(x)
        return len(self.log)

    def history(self) -> list[Any]:
        return self.log

    def pid(self) -> int:
        return os.getpid()

    def fail(self, msg: str) -> None:
        raise ValueError(msg)

    @jray.method(num_returns=2)
    def pair(self, x: int) -> tuple[int, int]:
        return x, -x

    def triple(self, x: int) -> tuple[int, int, int]:
        return x, x, x

    def echo(self, *args: Any, **kwargs: Any) -> Any:
        return args, kwargs

    @staticmethod
    def static(x: int) -> int:
        return x * 10


@jray.remote
def bump(counter: Any, times: int) -> int:
    for _ in range(times):
        counter.inc.remote()
    return jray.get(counter.get.remote(), timeout=T)


def test_handle_returned_at_once_and_state_kept(cluster: dict[str, object]) -> None:
    t0 = time.perf_counter()
    c = Counter.remote(10)
    assert time.perf_counter() - t0 < 0.5  # does not wait for the process
    assert jray.get(c.inc.remote(), timeout=T) == 11
    assert jray.get([c.inc.remote(5) for _ in range(3)], timeout=T) == [16, 21, 26]
    assert jray.get(c.static.remote(4), timeout=T) == 40
    assert jray.get(c.echo.remote(1, b=2), timeout=T) == ((1,), {"b": 2})
    assert "Counter" in repr(c)


def test_calls_from_one_caller_run_in_submission_order(cluster: dict[str, object]) -> None:
    c = Counter.remote()
    refs = [c.append.remote(i) for i in range(3000)]
    assert jray.get(refs, timeout=T) == list(range(1, 3001))
    assert jray.get(c.history.remote(), timeout=T) == list(range(3000))


def test_counter_incremented_from_many_tasks_gives_exact_count(
        cluster: dict[str, object]) -> None:
    c = Counter.remote()
    jray.get([bump.remote(c, 100) for _ in range(8)], timeout=60)
    assert jray.get(c.get.remote(), timeout=T) == 800


@jray.remote
class ParameterServer:
    def __init__(self, dim: int) -> None:
        self.params = np.zeros(dim)
        self.updates = 0

    def get_params(self) -> np.ndarray:
        return self.params

    def update(self, grad: np.ndarray) -> int:
        self.params = self.params + grad
        self.updates += 1
        return self.updates


@jray.remote
def worker_loop(ps: Any, dim: int, steps: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    last = None
    for _ in range(steps):
        params = jray.get(ps.get_params.remote(), timeout=T)
        assert params.shape == (dim,)
        grad = np.ones(dim) + 0.0 * rng.random(dim)
        last = ps.update.remote(grad)  # no wait: the next get_params comes after it
    jray.get(last, timeout=T)  # calls from one caller run in order: all applied
    return steps


@pytest.mark.parametrize("dim", [1_000, 200_000])  # inline, then shared-memory arrays
def test_parameter_server_seed_example(cluster: dict[str, object], dim: int) -> None:
    ps = ParameterServer.remote(dim)
    workers, steps = 4, 25
    done = jray.get([worker_loop.remote(ps, dim, steps, i) for i in range(workers)], timeout=90)
    assert done == [steps] * workers
    params = jray.get(ps.get_params.remote(), timeout=T)
    np.testing.assert_allclose(params, np.full(dim, float(workers * steps)))


def test_handles_travel_to_tasks_actors_and_inside_objects(cluster: dict[str, object]) -> None:
    c = Counter.remote()

    @jray.remote
    def via_box(box: dict[str, Any]) -> int:
        return jray.get(box["counter"].inc.remote(100), timeout=T)

    @jray.remote
    class Forwarder:
        def __init__(self, target: Any) -> None:
            self.target = target

        def forward(self, k: int) -> int:
            return jray.get(self.target.inc.remote(k), timeout=T)

    assert jray.get(via_box.remote({"counter": c}), timeout=T) == 100
    boxed = jray.get(jray.put([c]), timeout=T)[0]
    assert jray.get(boxed.inc.remote(1), timeout=T) == 101
    f = Forwarder.remote(c)
    assert jray.get(f.forward.remote(10), timeout=T) == 111
    assert boxed == c and hash(boxed) == hash(c)


def test_num_returns(cluster: dict[str, object]) -> None:
    c = Counter.remote()
    a, b = c.pair.remote(3)
    assert jray.get([a, b], timeout=T) == [3, -3]
    refs = c.triple.options(num_returns=3).remote(7)
    assert jray.get(refs, timeout=T) == [7, 7, 7]


def test_object_refs_as_arguments_and_as_task_dependencies(cluster: dict[str, object]) -> None:
    @jray.remote
    class Summer:
        def total(self, a: Any, b: Any = 0) -> float:
            return float(np.sum(a) + np.sum(b))

        def nested(self, box: list[Any]) -> float:
            return float(np.sum(jray.get(box[0], timeout=T)))

    @jray.remote
    def slow_value(x: int) -> int:
        time.sleep(0.3)
        return x

    @jray.remote
    def plus_one(x: float) -> float:
        return x + 1

    s = Summer.remote()
    big = jray.put(np.ones(500_000))  # shared memory
    assert jray.get(s.total.remote(big), timeout=T) == 500_000.0
    pending = slow_value.remote(5)  # not ready when the call is sent
    assert jray.get(s.total.remote(pending, b=big), timeout=T) == 500_005.0
    first = s.total.remote(np.arange(4))  # an actor result, passed on while pending
    assert jray.get(s.total.remote(first), timeout=T) == 6.0
    assert jray.get(plus_one.remote(s.total.remote(np.arange(5))), timeout=T) == 11.0
    assert jray.get(s.nested.remote([big]), timeout=T) == 500_000.0
    large_arg = np.arange(300_000, dtype=np.float64)  # travels through the store
    assert jray.get(s.total.remote(large_arg), timeout=T) == float(large_arg.sum())


def test_results_holding_refs_made_in_the_actor(cluster: dict[str, object]) -> None:
    @jray.remote
    class Maker:
        def make(self, n: int) -> list[Any]:
            return [jray.put(np.full(n, 2.0)), jray.put("small")]

    @jray.remote
    def total(box: list[Any]) -> float:
        return float(np.sum(jray.get(box[0], timeout=T)))

    m = Maker.remote()
    box = jray.get(m.make.remote(300_000), timeout=T)  # the actor dropped its own refs
    time.sleep(0.3)
    assert jray.get(box[1], timeout=T) == "small"
    assert float(np.sum(jray.get(box[0], timeout=T))) == 600_000.0
    assert jray.get(total.remote(m.make.remote(1000)), timeout=T) == 2000.0


def test_failed_dependency_fails_the_call(cluster: dict[str, object]) -> None:
    @jray.remote
    def broken() -> int:
        raise KeyError("nope")

    c = Counter.remote()
    with pytest.raises(KeyError):
        jray.get(c.inc.remote(broken.remote()), timeout=T)
    assert jray.get(c.get.remote(), timeout=T) == 0


def test_method_raising_does_not_kill_the_actor(cluster: dict[str, object]) -> None:
    c = Counter.remote()
    c.inc.remote()
    with pytest.raises(ValueError, match="bad input") as info:
        jray.get(c.fail.remote("bad input"), timeout=T)
    assert isinstance(info.value, TaskError)
    assert "Counter.fail" in str(info.value)
    assert jray.get(c.inc.remote(), timeout=T) == 2


def test_max_concurrency_runs_calls_on_threads(cluster: dict[str, object]) -> None:
    @jray.remote
    class Sleeper:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.now = 0
            self.peak = 0

        def nap(self, s: float) -> int:
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(s)
            with self.lock:
                self.now -= 1
            return self.peak

    s = Sleeper.options(max_concurrency=8).remote()
    jray.get(s.nap.remote(0), timeout=T)
    t0 = time.perf_counter()
    peaks = jray.get([s.nap.remote(0.3) for _ in range(8)], timeout=T)
    assert time.perf_counter() - t0 < 1.5
    assert max(peaks) > 1
    serial = Sleeper.remote()
    assert max(jray.get([serial.nap.remote(0.02) for _ in range(5)], timeout=T)) == 1


def test_async_actor_runs_coroutines_concurrently_and_sync_methods(
        cluster: dict[str, object]) -> None:
    @jray.remote
    class AsyncActor:
        def __init__(self) -> None:
            self.hits = 0

        async def wait(self, s: float) -> float:
            await asyncio.sleep(s)
            self.hits += 1
            return s

        def hits_so_far(self) -> int:
            return self.hits

    a = AsyncActor.remote()
    jray.get(a.hits_so_far.remote(), timeout=T)
    t0 = time.perf_counter()
    assert jray.get([a.wait.remote(0.5) for _ in range(100)], timeout=T) == [0.5] * 100
    assert time.perf_counter() - t0 < 3.0
    assert jray.get(a.hits_so_far.remote(), timeout=T) == 100
    limited = AsyncActor.options(max_concurrency=2).remote()
    t0 = time.perf_counter()
    jray.get([limited.wait.remote(0.2) for _ in range(4)], timeout=T)
    assert time.perf_counter() - t0 >= 0.38


def test_named_actors_namespaces_and_get_if_exists(cluster: dict[str, object]) -> None:
    c = Counter.options(name="counter-a").remote(1)
    assert jray.get(jray.get_actor("counter-a").inc.remote(), timeout=T) == 2
    with pytest.raises(ValueError, match="counter-a"):
        Counter.options(name="counter-a").remote()
    same = Counter.options(name="counter-a", get_if_exists=True).remote()
    assert same == c and jray.get(same.get.remote(), timeout=T) == 2
    other = Counter.options(name="counter-a", namespace="team").remote(100)
    assert jray.get(jray.get_actor("counter-a", namespace="team").get.remote(), timeout=T) == 100
    with pytest.raises(ValueError, match="no-such-actor"):
        jray.get_actor("no-such-actor")
    with pytest.raises(ValueError, match="counter-a"):
        jray.get_actor("counter-a", namespace="elsewhere")

    @jray.remote
    def lookup() -> int:
        return jray.get(jray.get_actor("counter-a").inc.remote(), timeout=T)

    assert jray.get(lookup.remote(), timeout=T) == 3
    jray.kill(other)
    jray.kill(c)
    assert eventually(lambda: _state("counter-a") is None)
    fresh = Counter.options(name="counter-a").remote(7)  # the name is free again
    assert jray.get(fresh.get.remote(), timeout=T) == 7
    jray.kill(fresh)


def _state(name: str) -> str | None:
    rows = [r for r in jray.actor.list_actors() if r["name"] == name and r["state"] != "DEAD"]
    return rows[0]["state"] if rows else None


def test_bad_input_is_reported_at_the_call_site(cluster: dict[str, object]) -> None:
    c = Counter.remote()
    with pytest.raises(AttributeError, match=r"Counter has no method 'nonexistent'"):
        c.nonexistent.remote()
    with pytest.raises(TypeError, match=r"\.remote"):
        c.inc(1)
    with pytest.raises(TypeError, match=r"Counter\.remote"):
        Counter()
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="unknown option"):
        Counter.options(max_retries=2)
    with pytest.raises(ValueError, match="get_if_exists"):
        Counter.options(get_if_exists=True)
    with pytest.raises(ValueError, match="__jray_checkpoint__"):
        Counter.options(checkpoint_interval=3).remote()
    with pytest.raises(TypeError, match="actor handle"):
        jray.kill("not a handle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_returns"):
        jray.method(num_returns=0)
    with pytest.raises(jray.exceptions.SerializationError, match="lock"):
        c.echo.remote(threading.Lock())


def test_resources_are_held_only_when_asked_for(cluster: dict[str, object]) -> None:
    base = jray.available_resources().get("CPU", 0.0)
    idle = Counter.remote()
    jray.get(idle.get.remote(), timeout=T)
    assert jray.available_resources().get("CPU", 0.0) == base
    holder = Counter.options(num_cpus=1).remote()
    jray.get(holder.get.remote(), timeout=T)
    assert jray.available_resources().get("CPU", 0.0) == base - 1
    jray.kill(holder)
    assert eventually(lambda: jray.available_resources().get("CPU", 0.0) == base)


def test_actor_exits_when_its_handles_go_away(cluster: dict[str, object]) -> None:
    c = Counter.remote()
    pid = jray.get(c.pid.remote(), timeout=T)
    last = c.inc.remote(41)  # sent before the handle goes: still runs
    del c
    assert jray.get(last, timeout=T) == 41
    assert eventually(lambda: not _alive(pid))
    kept = Counter.options(lifetime="detached").remote()
    kept_pid = jray.get(kept.pid.remote(), timeout=T)
    del kept
    time.sleep(0.5)
    assert _alive(kept_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped while we looked
        return False


def test_exit_actor_ends_the_actor_without_restart(cluster: dict[str, object]) -> None:
    @jray.remote(max_restarts=2)
    class Quitter:
        def quit(self) -> str:
            jray.actor.exit_actor()
            return "unreachable"

        def ping(self) -> str:
            return "pong"

    q = Quitter.remote()
    assert jray.get(q.ping.remote(), timeout=T) == "pong"
    with pytest.raises(ActorDiedError, match=r"Quitter\.quit called exit_actor\(\)"):
        jray.get(q.quit.remote(), timeout=T)  # the call that ends the actor fails, as in Ray
    with pytest.raises(ActorDiedError, match="exit_actor"):
        jray.get(q.ping.remote(), timeout=T)


def test_actor_output_reaches_the_driver(cluster: dict[str, object],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    @jray.remote
    class Talker:
        def say(self, text: str) -> None:
            print(text)

    t = Talker.remote()
    jray.get(t.say.remote("hello from the actor"), timeout=T)
    assert eventually(lambda: "hello from the actor" in capsys.readouterr().out or False, 5)


def test_an_instance_attribute_does_not_hide_a_method(cluster: dict[str, object]) -> None:
    # Ray looks methods up on the class: ``self.called`` (data) and ``called()`` coexist
    @jray.remote
    class Flag:
        def __init__(self) -> None:
            self.called = False

        def called(self) -> None:  # type: ignore[no-redef]
            self.called = True  # type: ignore[assignment,method-assign]

        def was_called(self) -> bool:
            return self.called  # type: ignore[return-value]

        @staticmethod
        def twice(x: int) -> int:
            return 2 * x

    f = Flag.remote()
    assert jray.get(f.was_called.remote(), timeout=T) is False
    jray.get(f.called.remote(), timeout=T)
    jray.get(f.called.remote(), timeout=T)  # still the method, not the attribute
    assert jray.get(f.was_called.remote(), timeout=T) is True
    assert jray.get(f.twice.remote(21), timeout=T) == 42


@jray.remote(num_cpus=0)
class Gate:
    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0

    async def wait(self) -> None:
        self.waiting += 1
        await self.opened.wait()

    async def open(self) -> None:
        self.opened.set()

    async def waiters(self) -> int:
        return self.waiting


@pytest.mark.parametrize("kind", ["threaded", "async"])
def test_concurrent_actors_run_a_call_whose_argument_is_ready_first(
        cluster: dict[str, object], kind: str) -> None:
    # Ray: threaded and async actors give no order; a call waiting for its argument
    # does not hold back the calls behind it
    @jray.remote
    class Echo:
        def echo(self, x: object) -> object:
            return x

    @jray.remote
    class AsyncEcho:
        async def echo(self, x: object) -> object:
            return x

    gate = Gate.remote()
    cls = Echo if kind == "threaded" else AsyncEcho
    e = cls.options(max_concurrency=2).remote()
    blocked = e.echo.remote(gate.wait.remote())
    assert jray.get(e.echo.remote(jray.put(2)), timeout=10) == 2
    jray.get(gate.open.remote(), timeout=T)
    assert jray.get(blocked, timeout=T) is None


def test_threads_of_an_actor_wait_for_objects_at_the_same_time(
        cluster: dict[str, object]) -> None:
    @jray.remote
    class Waiter:
        def through(self, gate: Any, i: int) -> int:
            jray.get(gate.wait.remote(), timeout=T)
            return i

    gate = Gate.remote()
    w = Waiter.options(max_concurrency=3).remote()
    refs = [w.through.remote(gate, i) for i in range(3)]
    assert eventually(lambda: jray.get(gate.waiters.remote(), timeout=T) == 3, 20)
    jray.get(gate.open.remote(), timeout=T)
    assert jray.get(refs, timeout=T) == [0, 1, 2]


def test_a_named_call_sets_the_process_title_while_it_runs(
        cluster: dict[str, object]) -> None:
    import psutil

    @jray.remote
    class Titled:
        def title(self) -> str:
            return psutil.Process().cmdline()[0]

    t = Titled.remote()
    assert jray.get(t.title.options(name="load-shard-3").remote(), timeout=T) == \
        "ray::load-shard-3"
    assert jray.get(t.title.options(name="other").remote(), timeout=T) == "ray::other"
    assert not jray.get(t.title.remote(), timeout=T).startswith("ray::")  # put back after
    with pytest.raises(ValueError, match="name"):
        t.title.options(name="")


@jray.remote
def plus_one(x: int) -> int:
    return x + 1


def test_refs_to_tasks_an_actor_submitted_come_back_usable(
        cluster: dict[str, object]) -> None:
    # the head hears of the actor's tasks before the caller looks their refs up
    @jray.remote
    class Submitter:
        def submit(self, n: int) -> list[Any]:
            return [plus_one.remote(i) for i in range(n)]

    s = Submitter.remote()
    for _ in range(10):
        assert jray.get(jray.get(s.submit.remote(5), timeout=T), timeout=T) == [1, 2, 3, 4, 5]


@jray.remote(num_cpus=0)
def after(s: float, value: Any) -> Any:
    time.sleep(s)
    return value


@jray.remote(num_cpus=0)
def relay(handle: Any, arg_ref: Any) -> Any:
    return jray.get(handle.echo.remote(arg_ref), timeout=T)


def test_a_sync_actor_runs_another_callers_call_while_one_waits_for_its_argument(
        cluster: dict[str, object]) -> None:
    @jray.remote
    class Echo:
        def echo(self, x: object) -> object:
            return x

    e = Echo.remote()
    jray.get(e.echo.remote(0), timeout=T)
    slow = relay.remote(e, after.remote(6, "slow"))  # its call waits for its argument
    time.sleep(1)
    start = time.monotonic()
    assert jray.get(relay.remote(e, jray.put("fast")), timeout=T) == "fast"
    assert time.monotonic() - start < 4
    assert jray.get(slow, timeout=T) == "slow"
    # one caller's calls keep their order, waiting included
    assert jray.get([e.echo.remote(after.remote(1, "first")), e.echo.remote("second")],
                    timeout=T) == ["first", "second"]
