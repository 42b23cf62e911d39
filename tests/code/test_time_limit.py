"""tests/conftest.py's check that keeps `make test-fast` fast: a test without a slow, integration or
gpu marker fails once its setup and call together take longer than the limit; a marked one does not."""

from __future__ import annotations

pytest_plugins = ["pytester"]

INNER_CONFTEST = """
from tests.conftest import UnmarkedTimeLimit


def pytest_configure(config):
    config.pluginmanager.register(UnmarkedTimeLimit(0.3))
"""

INNER_TESTS = """
import time

import pytest


@pytest.fixture
def slow_setup():
    time.sleep(0.2)


def test_unmarked_over_the_limit():
    time.sleep(0.4)


def test_unmarked_over_the_limit_with_its_setup(slow_setup):
    time.sleep(0.2)


def test_unmarked_within_the_limit():
    pass


@pytest.mark.slow
def test_slow_over_the_limit():
    time.sleep(0.4)


@pytest.mark.integration
def test_integration_over_the_limit(slow_setup):
    time.sleep(0.2)


def test_unmarked_that_fails_on_its_own():
    time.sleep(0.4)
    assert False, "its own failure"
"""


def test_an_unmarked_test_over_the_limit_fails_and_a_marked_one_passes(pytester):
    pytester.makeini("[pytest]\nmarkers =\n    slow: long\n    integration: servers\n    gpu: cuda\n")
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    outcomes = {r.nodeid.split("::")[-1]: r.outcome for r in result.reprec.getreports("pytest_runtest_logreport")
                if r.when == "call"}  # fmt: skip
    assert outcomes == {
        "test_unmarked_over_the_limit": "failed",
        "test_unmarked_over_the_limit_with_its_setup": "failed",  # 0.2 s setup + 0.2 s call
        "test_unmarked_within_the_limit": "passed",
        "test_slow_over_the_limit": "passed",
        "test_integration_over_the_limit": "passed",
        "test_unmarked_that_fails_on_its_own": "failed",
    }
    out = result.stdout.str()
    assert "test_inner.py::test_unmarked_over_the_limit took 0." in out
    assert "over the 0.3 s allowed a test without a marker of slow, integration, gpu" in out
    assert "mark it slow (or make it faster)" in out
    assert "its own failure" in out  # a test's own failure is reported as it was, not replaced
