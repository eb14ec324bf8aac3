"""The fixed train / validation / test split of the real KiTS23 label maps used for CT synthesis.

150 KiTS23 training label maps (case ids in ``kidney/data/kits23_split.json``) are the source of
real kidney, tumour and cyst geometry: :func:`kidney.phantom.from_labels` draws a CT around each.
Weights are trained on ``train`` and chosen on ``validation`` only; ``test`` is scored once, after
the choice. The split was made once by :func:`make_split` and is stored, so it never changes:

1. sort the 150 cases by their mass volume (tumour + cyst voxels × voxel volume, from the KiTS23
   statistics table), ties by case id;
2. cut the sorted list into 10 consecutive groups of 15 cases (similar mass sizes);
3. in each group, a seeded permutation (``numpy.random.default_rng([SEED, group])``) gives 10 cases
   to train, 2 to validation, 3 to test.

So every split holds small and large masses alike (a stratified split, 100 / 20 / 30).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

import numpy as np

__all__ = ["SPLIT_FILE", "SPLITS", "SEED", "load_split", "make_split", "split_of"]

SPLIT_FILE = Path(__file__).resolve().parent / "data" / "kits23_split.json"
SPLITS = ("train", "validation", "test")
SEED = 20261202
_GROUP = 15
_PER_GROUP = {"train": 10, "validation": 2, "test": 3}


def load_split(path=SPLIT_FILE) -> Dict[str, List[str]]:
    """``{"train": [...], "validation": [...], "test": [...]}`` case ids (``case_XXXXX``), sorted."""
    data = json.loads(Path(path).read_text())
    return {name: list(data["splits"][name]) for name in SPLITS}


def split_of(case_id: str, split: Mapping[str, Iterable[str]] = None) -> str:
    """The split a case id belongs to; ``KeyError`` naming the id when it is in none."""
    split = load_split() if split is None else split
    for name in SPLITS:
        if case_id in split[name]:
            return name
    raise KeyError(f"{case_id} is in none of the splits of {SPLIT_FILE.name}")


def make_split(case_ids: Iterable[str], stats_csv, seed: int = SEED) -> Dict[str, List[str]]:
    """The split rule (module docstring) over ``case_ids``; ``stats_csv`` is the KiTS23 statistics
    table (columns ``case, sp0_mm, sp1_mm, sp2_mm, n_tumor, n_cyst``)."""
    ids = sorted(set(case_ids))
    if len(ids) % _GROUP:
        raise ValueError(f"make_split needs a multiple of {_GROUP} cases, got {len(ids)}")
    rows = {r["case"]: r for r in csv.DictReader(Path(stats_csv).open())}
    missing = [c for c in ids if c not in rows]
    if missing:
        raise ValueError(f"{stats_csv} has no row for {missing[0]} ({len(missing)} case(s) missing)")

    def mass_ml(c):
        r = rows[c]
        voxel_ml = float(r["sp0_mm"]) * float(r["sp1_mm"]) * float(r["sp2_mm"]) / 1000.0
        return (int(r["n_tumor"]) + int(r["n_cyst"])) * voxel_ml

    ordered = sorted(ids, key=lambda c: (mass_ml(c), c))
    out = {name: [] for name in SPLITS}
    for g in range(len(ordered) // _GROUP):
        group = ordered[g * _GROUP:(g + 1) * _GROUP]
        perm = np.random.default_rng([seed, g]).permutation(len(group))
        start = 0
        for name in SPLITS:
            n = _PER_GROUP[name]
            out[name] += [group[i] for i in perm[start:start + n]]
            start += n
    return {name: sorted(v) for name, v in out.items()}
