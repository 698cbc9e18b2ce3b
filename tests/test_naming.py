"""Names that tell recordings apart: ``naming.distinct_names`` and ``check_distinct_paths``."""

import pytest

from actsort_gpu.naming import check_distinct_paths, distinct_names


def test_own_names_when_they_differ(tmp_path):
    paths = [tmp_path / "m1" / "a.actsort", tmp_path / "m2" / "b.actsort"]
    assert distinct_names(paths) == ["a.actsort", "b.actsort"]
    assert distinct_names([tmp_path / "x.mat"], ["x"]) == ["x"]


def test_parent_folders_only_as_far_as_needed(tmp_path):
    paths = [
        tmp_path / "mouse1" / "day1" / "plane0.actsort",
        tmp_path / "mouse2" / "day1" / "plane0.actsort",
        tmp_path / "mouse2" / "day2" / "plane0.actsort",
        tmp_path / "mouse3" / "other.actsort",
    ]
    assert distinct_names(paths) == [
        "mouse1/day1/plane0.actsort",
        "mouse2/day1/plane0.actsort",
        "day2/plane0.actsort",
        "other.actsort",
    ]
    # a file's stem stands for its name (simulate / train sources)
    mats = [tmp_path / "m1" / "features.mat", tmp_path / "m2" / "features.mat"]
    assert distinct_names(mats, ["features", "features"]) == ["m1/features", "m2/features"]


def test_relative_paths_name_the_real_parent(tmp_path, monkeypatch):
    (tmp_path / "m1").mkdir()
    monkeypatch.chdir(tmp_path / "m1")
    assert distinct_names(["plane0.actsort", "../m2/plane0.actsort"]) == [
        "m1/plane0.actsort",
        "m2/plane0.actsort",
    ]


def test_the_same_place_twice_is_refused(tmp_path):
    (tmp_path / "m1").mkdir()
    check_distinct_paths([tmp_path / "m1" / "a", tmp_path / "m2" / "a"])
    with pytest.raises(ValueError, match="given twice: .*m1/a and .*m1/../m1/a"):
        check_distinct_paths([tmp_path / "m1" / "a", tmp_path / "m1" / ".." / "m1" / "a"])
    # the name loop ends even then: the whole path below the root, the same for both
    same = distinct_names([tmp_path / "a", tmp_path / "a"])
    assert same[0] == same[1] == str((tmp_path / "a").resolve()).lstrip("/")
