"""The evaluation budget of BUILD.images, measured in-process (the corpus in
``bad_input_test.py`` covers the command line)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from buildtool.errors import StarlarkError
from buildtool.workspace import starlark
from buildtool.workspace.config import Budget

BENCH_BUILD = """
for i in range(10000):
    if i % 100 == 0:
        image(name = "t%d" % i, args = {"D": str(i % 1000)})
    else:
        image(
            name = "t%d" % i,
            args = {"D": str(i % 1000)},
            parents = {"BASE": ":t%d" % (i - i % 100)},
        )
"""


def evaluate(source: str, budget: Budget) -> list[dict[str, Any]]:
    declared: list[dict[str, Any]] = []
    code = starlark.compile_file(source, "BUILD.images", budget)
    starlark.execute(code, "BUILD.images", {"image": lambda **kw: declared.append(kw)}, budget)
    return declared


def test_the_bench_10000_target_loop_takes_between_90000_and_100000_steps() -> None:
    assert len(evaluate(BENCH_BUILD, Budget(max_steps=100_000))) == 10_000
    with pytest.raises(StarlarkError, match="more than 90000 steps"):
        evaluate(BENCH_BUILD, Budget(max_steps=90_000))


def test_a_100000_term_sum_is_refused_at_its_line_in_well_under_a_second() -> None:
    source = 'image(name = "app")\nx = ' + " + ".join(["1"] * 100_000) + "\n"
    started = time.process_time()
    with pytest.raises(StarlarkError) as refused:
        starlark.compile_file(source, "BUILD.images")
    assert time.process_time() - started < 1.0
    assert str(refused.value) == "BUILD.images:2: expression nested too deeply"


def test_a_file_larger_than_the_size_budget_is_refused_before_it_is_parsed() -> None:
    source = "x = 1\n" * 200
    with pytest.raises(StarlarkError) as refused:
        starlark.compile_file(source, "BUILD.images", Budget(max_size=1000))
    assert str(refused.value) == (
        "BUILD.images: file of 1200 characters is larger than the size budget (1000); "
        "the limit is [evaluation] max_size in .cache-spec"
    )
