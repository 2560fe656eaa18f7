"""Option values checked where they are given, as Ray does: bad resource amounts
(NaN, infinite, negative) raise ``ValueError`` naming the option, at ``@remote``,
``.options()`` and ``init``, before anything starts. No cluster is needed.
"""

from __future__ import annotations

import math
import re

import pytest

import jray as ray


@pytest.mark.parametrize("option", ["num_cpus", "num_gpus", "memory"])
@pytest.mark.parametrize("amount", [math.nan, math.inf, -1])
def test_bad_resource_amounts_name_the_option(option: str, amount: float) -> None:
    def f() -> None:
        pass

    class C:
        pass

    with pytest.raises(ValueError, match=rf"@jray.remote on f: {option} must be a number"):
        ray.remote(**{option: amount})(f)
    with pytest.raises(ValueError, match=rf"f.options\(\): {option} must be a number"):
        ray.remote(f).options(**{option: amount})
    with pytest.raises(ValueError, match=rf"class C: {option} must be a number"):
        ray.remote(**{option: amount})(C)


@pytest.mark.parametrize("amount", [math.nan, math.inf, -math.inf, -1])
def test_bad_custom_resource_amounts_name_the_resource(amount: float) -> None:
    def f() -> None:
        pass

    with pytest.raises(ValueError, match="resource 'widget' must be"):
        ray.remote(resources={"widget": amount})(f)
    with pytest.raises(ValueError, match="resource 'widget' must be"):
        ray.remote(f).options(resources={"widget": amount})


@pytest.mark.parametrize("amount", [math.nan, math.inf])
def test_init_refuses_nan_and_inf_counts(amount: float) -> None:
    with pytest.raises(ValueError, match="num_cpus must be a finite number"):
        ray.init(num_cpus=amount)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resource 'widget'"):
        ray.init(resources={"widget": amount})
    assert not ray.is_initialized()


@pytest.mark.parametrize("amount", [math.nan, math.inf, -1.0])
def test_bad_checkpoint_interval_is_refused(amount: float) -> None:
    class C:
        pass

    with pytest.raises(ValueError, match="checkpoint_interval_s must be a finite number"):
        ray.remote(checkpoint_interval_s=amount)(C)


@pytest.mark.parametrize(("option", "value"), [
    ("max_retries", 0.5), ("num_returns", 1.5), ("num_cpus", "2"), ("max_retries", True)])
def test_a_wrong_type_is_a_type_error_as_in_ray(option: str, value: object) -> None:
    def f() -> None:
        pass

    with pytest.raises(TypeError, match=option) as info:
        ray.remote(**{option: value})(f)
    assert isinstance(info.value, ValueError)  # what jray raised before


@pytest.mark.parametrize("option", ["max_restarts", "max_task_retries", "max_concurrency"])
def test_a_wrong_type_of_actor_option_is_a_type_error(option: str) -> None:
    class C:
        pass

    with pytest.raises(TypeError, match=option):
        ray.remote(**{option: 0.5})(C)
    with pytest.raises(ValueError, match=f"The keyword '{option}' only accepts None"):
        ray.remote(**{option: -5})(C)


def test_int_option_messages_are_rays() -> None:
    def f() -> None:
        pass

    for option in ("max_retries", "max_calls"):
        with pytest.raises(TypeError, match=re.escape(
                f"The type of keyword '{option}' must be {(int, type(None))}, but received "
                f"type {float}")):
            ray.remote(**{option: 0.5})(f)
    with pytest.raises(TypeError, match=re.escape(
            f"must be {(int, str, type(None))}, but received type {float}")):
        ray.remote(num_returns=0.5)(f)
    with pytest.raises(ValueError, match="The keyword 'max_calls' only accepts None, 0 or a "
                                         "positive integer"):
        ray.remote(max_calls=-1)(f)
    with pytest.raises(ValueError, match=re.escape(
            "The keyword 'num_returns' only accepts None, a non-negative integer, "
            "'streaming' (for generators), or 'dynamic'")):
        ray.remote(num_returns=-3)(f)
    with pytest.raises(ValueError, match="The keyword 'max_retries' only accepts None, 0, -1 "
                                         "or a positive integer, where -1 represents infinity"):
        ray.remote(max_retries=-2)(f)
    with pytest.raises(ValueError, match="not supported in '.options\\(\\)'"):
        ray.remote(f).options(max_calls=1)


def test_resource_quantities_finer_than_a_ten_thousandth_are_refused() -> None:
    def f() -> None:
        pass

    with pytest.raises(ValueError, match="resource num_gpus cannot go beyond 0.0001"):
        ray.remote(num_gpus=0.0000001)(f)
    with pytest.raises(ValueError, match="resource widget cannot go beyond 0.0001"):
        ray.remote(resources={"widget": 0.00001})(f)
    ray.remote(num_cpus=0.0001, resources={"widget": 1.2345})(f)  # fine: 4 decimals
