"""benchmarks/data_efficiency.py's transfer sets: the same 30 test digits per class for every N, N train per class."""

import pytest

from tests.benchmark_module import load_benchmark


def _bench():
    return load_benchmark("data_efficiency")


def test_digit_subsets_share_one_test_set_and_hold_n_per_class(tmp_path):
    pytest.importorskip("sklearn")
    bench = _bench()
    five, twenty = bench.write_digits(tmp_path / "5", 5), bench.write_digits(tmp_path / "20", 20)
    for data, n in ((five, 5), (twenty, 20)):
        assert sorted(p.name for p in (data / "train").iterdir()) == [str(d) for d in range(10)]
        assert {len(list((data / "train" / str(d)).iterdir())) for d in range(10)} == {n}
        assert {len(list((data / "val" / str(d)).iterdir())) for d in range(10)} == {bench.TEST_PER_CLASS}
    names = lambda d, split: {p.relative_to(d / split) for p in (d / split).rglob("*.png")}  # noqa: E731
    assert names(five, "val") == names(twenty, "val")  # one test set for every N
    assert names(five, "train") < names(twenty, "train")  # the first N of one seeded order: nested
    assert not names(twenty, "train") & names(twenty, "val")
