"""OMP_NUM_THREADS: set to 1 for the runtime unless the user chose it, never passed on to children."""

import os

import pytest

from executorch_optimum.runtime import threads


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(threads, "_set_here", False)
    return monkeypatch


def test_unset_becomes_one_and_children_do_not_inherit_it(fresh):
    fresh.delenv("OMP_NUM_THREADS", raising=False)
    threads.single_thread_openmp()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    child = threads.without_our_openmp_setting({"OMP_NUM_THREADS": "1", "PATH": "/bin"})
    assert child == {"PATH": "/bin"}


def test_a_users_value_is_kept_for_us_and_children(fresh):
    fresh.setenv("OMP_NUM_THREADS", "3")
    threads.single_thread_openmp()
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert threads.without_our_openmp_setting({"OMP_NUM_THREADS": "3"}) == {"OMP_NUM_THREADS": "3"}


def test_configure_threads_rejects_zero():
    with pytest.raises(ValueError, match="threads must be >= 1"):
        threads.configure_threads(0)
