"""The checker itself must be able to say no."""

from tests.replicaclient.linearizability import INF, Op, check, linearizable


def put(v, s, e, c=0):
    return Op(c, "put", "k", v, s, e)


def get(v, s, e, c=1):
    return Op(c, "get", "k", v, s, e)


def test_sequential_history():
    assert linearizable([put("1", 0, 1), get("1", 2, 3)])
    assert not linearizable([put("1", 0, 1), get("", 2, 3)])


def test_a_read_overlapping_a_write_may_see_either_value():
    assert linearizable([put("1", 0, 10), get("", 1, 2)])
    assert linearizable([put("1", 0, 10), get("1", 1, 2)])
    assert not linearizable([put("1", 0, 10), get("2", 1, 2)])


def test_new_then_old_inversion_is_caught():
    # The anomaly ABD's write-back exists to prevent: a later read sees an older value.
    history = [put("1", 0, 10), get("1", 1, 2, c=1), get("", 3, 4, c=2)]
    assert not linearizable(history)


def test_an_unknown_write_may_or_may_not_have_happened():
    assert linearizable([put("1", 0, INF), get("", 5, 6)])
    assert linearizable([put("1", 0, INF), get("1", 5, 6)])
    assert linearizable([put("1", 0, INF), get("1", 5, 6), get("1", 7, 8)])
    assert not linearizable([put("1", 0, INF), get("1", 5, 6), get("", 7, 8)])


def test_concurrent_writers():
    history = [put("a", 0, 5, c=0), put("b", 1, 6, c=1), get("b", 7, 8), get("b", 9, 10)]
    assert linearizable(history)
    history = [put("a", 0, 5, c=0), put("b", 1, 6, c=1), get("b", 7, 8), get("a", 9, 10)]
    assert not linearizable(history)


def test_keys_are_checked_separately():
    history = [Op(0, "put", "x", "1", 0, 1), Op(0, "get", "y", "", 2, 3),
               Op(1, "get", "x", "", 4, 5)]
    assert check(history) == {"x": False, "y": True}
