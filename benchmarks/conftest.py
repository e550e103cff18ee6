"""Benchmarks run in two modes.

quick (default; what ``pytest`` and CI run): tiny sizes and pytest-benchmark's disabled mode,
so every benchmark body runs once and the whole folder takes seconds; it only checks that the
suite still runs. full: ``pytest benchmarks --full`` (or ``--benchmark-enable``, or the
environment variable ``BACKPROP_BENCH=full``): the real sizes, timed by pytest-benchmark.
"""

import os

import pytest

from backprop import available_backends
from backprop import bench


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="backprop benchmarks: real sizes, timed (default: quick, run once)")


def full_mode(config) -> bool:
    return (config.getoption("--full") or config.getoption("benchmark_enable", False)
            or os.environ.get("BACKPROP_BENCH") == "full")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if not full_mode(config):
        config.option.benchmark_disable = True
        session = getattr(config, "_benchmarksession", None)
        if session is not None:     # pytest-benchmark read its options already
            session.disabled = True


@pytest.fixture(scope="session")
def full(request) -> bool:
    return full_mode(request.config)


@pytest.fixture(scope="session")
def config(full) -> dict:
    """:data:`backprop.bench.FULL` or :data:`backprop.bench.QUICK`."""
    return bench.FULL if full else bench.QUICK


def speed_networks(full: bool):
    return (bench.FULL if full else bench.QUICK)["speed_networks"]


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", available_backends())
    if "network" in metafunc.fixturenames:
        nets = speed_networks(full_mode(metafunc.config))
        metafunc.parametrize("network", nets, ids=[name for name, _, _ in nets])
