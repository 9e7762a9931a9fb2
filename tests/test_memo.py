"""banpipe.memo: the one bounded two-generation memo of the hot paths."""

from __future__ import annotations

from banpipe.memo import Memo


def test_memo_keeps_hot_keys_and_stays_bounded():
    computed = []

    def compute(key):
        computed.append(key)
        return key * 2

    cache = Memo(size=4)
    for i in range(100):
        for key in ("hot", i):
            value = cache.get(key)
            if value is None:
                value = cache.lookup(key, compute)
            assert value == key * 2
        assert len(cache) <= 8
    assert computed.count("hot") == 1  # survived every turnover
    assert computed[1:] == [i for i in range(100)] and len(computed) == 101


def test_memo_stores_none_and_recalls_from_the_old_generation():
    memo = Memo(2, make=lambda key: None)
    assert memo.lookup("a") is None
    assert memo.get("a", memo) is None  # a stored None, not a miss
    memo.put("b", 1)
    memo.put("c", 2)  # turnover: a, b are old now
    assert memo.get("b") is None and memo.recall("b") == 1 and memo.get("b") == 1
    assert memo.recall("zz") is None
    memo.clear()
    assert len(memo) == 0 and not memo
