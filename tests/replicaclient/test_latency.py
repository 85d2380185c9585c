from hypothesis import given
from hypothesis import strategies as st

from replicaclient.latency import Histogram, PercentileWindow


def test_percentile_of_a_known_window():
    w = PercentileWindow(size=100)
    for i in range(1, 101):
        w.add(i / 1000)
    assert w.percentile(0.5) == 0.05
    assert w.percentile(0.95) == 0.095
    assert w.percentile(1.0) == 0.1


def test_window_forgets_old_samples():
    w = PercentileWindow(size=10)
    for _ in range(10):
        w.add(1.0)
    for _ in range(10):
        w.add(0.001)
    assert w.percentile(0.99) == 0.001


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=1))
def test_percentile_is_one_of_the_samples_and_monotone(samples, q):
    w = PercentileWindow(size=500)
    for s in samples:
        w.add(s)
    p = w.percentile(q)
    assert p in samples
    assert w.percentile(0.0) <= p <= w.percentile(1.0)


@given(st.lists(st.floats(min_value=0, max_value=1), max_size=120),
       st.integers(min_value=1, max_value=20), st.floats(min_value=0, max_value=1))
def test_percentile_is_that_of_the_last_size_samples(samples, size, q):
    w = PercentileWindow(size=size)
    for s in samples:
        w.add(s)
    window = sorted(samples[-size:])
    assert len(w) == len(window)
    expected = window[min(len(window) - 1, max(0, int(q * len(window) + 0.5) - 1))] \
        if window else None
    assert w.percentile(q) == expected


def test_histogram_buckets_are_cumulative():
    h = Histogram((0.001, 0.01, float("inf")))
    for s in (0.0005, 0.002, 0.003, 5.0):
        h.observe(s)
    assert h.cumulative() == [(0.001, 1), (0.01, 3), (float("inf"), 4)]
    assert h.count == 4

