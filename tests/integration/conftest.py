"""Fixtures: real knotd and unbound on free loopback ports, and a factory
that runs the dnsveil binary under test and checks its exit on teardown."""

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def knot(tmp_path_factory):
    k = helpers.Knot("knotd", tmp_path_factory.mktemp("knot"))
    try:
        k.start()
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def unbound(tmp_path_factory, knot):
    u = helpers.Unbound("unbound", tmp_path_factory.mktemp("unbound"))
    try:
        u.start(knot)
        yield u
    finally:
        u.stop()


class DaemonFactory:
    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []

    def __call__(self, *upstreams, **kw):
        d = helpers.Dnsveil(self.workdir, upstreams, **kw)
        self.started.append(d)
        return d.start()

    def finish(self):
        problems = []
        for d in self.started:
            problems += d.stop()
        return problems


@pytest.fixture
def dnsveil(tmp_path):
    """dnsveil("udp://127.0.0.1:N", ..., timeout=800, listen=[(h, p)], extra=[...])
    starts the daemon and waits until it answers. Teardown sends SIGTERM and
    fails the test unless it exits 0 with a sanitizer-clean log."""
    factory = DaemonFactory(tmp_path)
    yield factory
    problems = factory.finish()
    if problems:
        pytest.fail("dnsveil teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def relay_factory(knot):
    relays = []

    def make(delay=0.0):
        r = helpers.CountingRelay("127.0.0.1", knot.port, delay=delay)
        relays.append(r)
        return r

    yield make
    for r in relays:
        r.close()


def module_daemon(tmp_path_factory, upstream_url):
    """Shared by the long parametrised matrices: one daemon per module."""
    factory = DaemonFactory(tmp_path_factory.mktemp("dnsveil"))
    d = factory(upstream_url)
    return factory, d


@pytest.fixture
def cfgdir():
    """A directory the daemon can still read after it drops to 'nobody'
    (pytest's own temporary directories are private to root)."""
    d = Path(tempfile.mkdtemp(prefix="dnsveil-cfg-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
