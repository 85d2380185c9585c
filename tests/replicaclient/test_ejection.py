from replicaclient.ejection import OutlierDetector


def detector(n=4, **kw):
    d = OutlierDetector(**kw)
    for r in "abcdefgh"[:n]:
        d.add(r)
    return d


def test_consecutive_failures_eject_and_a_success_resets_the_count():
    d = detector(consecutive=3, base=1.0)
    assert not d.failure("a", 0) and not d.failure("a", 0)
    d.success("a", 0)
    assert not d.failure("a", 0) and not d.failure("a", 0)
    assert d.failure("a", 0)
    assert d.state("a", 0.5) == "ejected"
    assert d.split(list("abcd"), 0.5) == (["b", "c", "d"], [], ["a"])


def test_ejected_replica_is_probed_one_request_at_a_time_then_returns():
    d = detector(consecutive=1, base=1.0)
    d.failure("a", 0)
    assert d.split(["a", "b"], 1.0) == (["b"], ["a"], [])
    d.probe_sent("a")
    assert d.split(["a", "b"], 1.0) == (["b"], [], ["a"])
    assert d.success("a", 1.1)
    assert d.state("a", 1.1) == "healthy"


def test_interval_grows_with_each_ejection_and_is_capped():
    d = detector(consecutive=1, base=1.0, maximum=2.5)
    d.failure("a", 0)                 # ejected until 1
    assert d.failure("a", 1.0)        # probe failed: until 1 + 2
    assert d.state("a", 2.9) == "ejected" and d.state("a", 3.0) == "probing"
    assert d.failure("a", 3.0)        # until 3 + min(2.5, 3)
    assert d.state("a", 5.4) == "ejected" and d.state("a", 5.5) == "probing"


def test_late_failures_of_an_ejected_replica_do_not_extend_its_ejection():
    d = detector(consecutive=1, base=1.0)
    d.failure("a", 0)
    assert not d.failure("a", 0.5)
    assert d.state("a", 1.0) == "probing"


def test_never_ejects_more_than_the_allowed_fraction_nor_a_lone_replica():
    d = detector(n=4, consecutive=1, max_fraction=0.5)
    assert d.failure("a", 0) and d.failure("b", 0)
    assert not d.failure("c", 0)
    lone = detector(n=1, consecutive=1)
    assert not lone.failure("a", 0)


def test_a_replica_back_or_removed_no_longer_counts_as_ejected():
    d = detector(n=3, consecutive=1, base=1.0)
    assert d.failure("a", 0)
    assert not d.failure("b", 0)  # one of three may be out at a time
    assert d.success("a", 1.5)
    assert d.split(list("abc"), 1.5) == (list("abc"), [], [])
    assert d.failure("b", 2.0)  # a is back, so b may go
    assert d.split(list("abc"), 2.5) == (["a", "c"], [], ["b"])
    d.remove("b")
    d.add("b")
    assert d.ejected_count(2.5) == 0
    assert d.split(list("abc"), 2.5) == (list("abc"), [], [])
    assert d.failure("c", 2.5)
