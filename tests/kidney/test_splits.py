"""kidney.splits: the fixed KiTS23 label-map split is disjoint, complete and reproduced by its rule."""
from __future__ import annotations

import json

import pytest

from kidney import splits


def test_split_is_disjoint_and_sized():
    s = splits.load_split()
    sets = {name: set(ids) for name, ids in s.items()}
    assert {name: len(ids) for name, ids in sets.items()} == {"train": 100, "validation": 20, "test": 30}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    for ids in s.values():
        assert ids == sorted(ids) and len(ids) == len(set(ids))


def test_split_file_is_what_the_rule_makes(repo_data):
    """The stored split is fixed: the rule re-run over its 150 cases gives it back exactly."""
    s = splits.load_split()
    every = [c for ids in s.values() for c in ids]
    again = splits.make_split(every, repo_data / "kits23_sample" / "kits23_segmentation_stats.csv")
    assert again == s


def test_split_names_every_case_and_its_blob():
    doc = json.loads(splits.SPLIT_FILE.read_text())
    every = [c for ids in doc["splits"].values() for c in ids]
    assert sorted(doc["git_blob"]) == sorted(every)
    assert all(len(b) == 40 for b in doc["git_blob"].values())
    assert doc["seed"] == splits.SEED


def test_split_of_and_bad_input(repo_data):
    s = splits.load_split()
    assert splits.split_of(s["test"][0]) == "test"
    with pytest.raises(KeyError, match="case_99999"):
        splits.split_of("case_99999")
    with pytest.raises(ValueError, match="multiple of 15"):
        splits.make_split(s["test"][:7], repo_data / "kits23_sample" / "kits23_segmentation_stats.csv")
    with pytest.raises(ValueError, match="case_99999"):
        splits.make_split(s["test"][:14] + ["case_99999"],
                          repo_data / "kits23_sample" / "kits23_segmentation_stats.csv")
