import math

import numpy as np
import pytest

from deft6g.experiment import isolated, peak_rss_mb


def test_isolated_returns_what_the_function_returns_in_this_process():
    assert isolated(math.comb, 10, 3) == math.comb(10, 3)
    assert isolated(np.linspace, 0.0, 1.0, num=5) == np.linspace(0.0, 1.0, num=5).tolist()   # arrays: lists


def test_isolated_child_raises_no_warning_of_its_own(monkeypatch):
    # the child must not be started as `-m` of a module its package has imported (runpy's RuntimeWarning)
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    assert isolated(math.comb, 10, 3) == 120


def test_isolated_failure_names_the_function_and_shows_its_error():
    with pytest.raises(RuntimeError, match=r"(?s)math\.sqrt failed in its subprocess.*math domain error"):
        isolated(math.sqrt, -1.0)


def test_peak_memory_in_a_subprocess_is_its_own():
    # getrusage's ru_maxrss would report this process's peak in the child (Linux carries it across fork and exec)
    block = bytearray(600 * 2 ** 20)
    block[::4096] = b"\x01" * len(block[::4096])                  # touch every page: resident
    parent = peak_rss_mb()
    child = isolated(peak_rss_mb)
    assert parent > 600 and child < parent - 500, (parent, child)
