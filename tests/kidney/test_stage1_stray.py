"""scripts/stage1_stray.py: what stage 1 calls kidney far from every labelled voxel."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kidney import phantom
from kidney.phantom import TISSUE_ID
from kidney.model import KidneyNet, save_weights
from kidney.pipeline import Segmenter

REPO = Path(__file__).resolve().parents[2]


def test_stray_counts_what_lies_far_from_the_labels_at_each_level(load_script):
    ss = load_script("stage1_stray")
    seg = Segmenter.stage1_only((KidneyNet("tiny", seed=1), {"stage": 1, "spacing_mm": 8.0}))
    prob = np.zeros((6, 6, 6), np.float32)
    prob[1, 1, 1:3] = (0.9, 0.3)   # on the kidney: one found, one not
    prob[1, 2, 1] = 0.7            # 8 mm from it: near, not stray
    prob[5, 5, 4:6] = 0.6          # far: two stray voxels at 0.5
    prob[5, 0, 5] = 0.2            # far: stray at the ROI threshold only
    seg.stage1_probabilities = lambda hu, spacing: (prob, int((prob > 0).sum()))
    truth = np.zeros((12, 12, 12), bool)   # the scan on 4 mm voxels: two per stage-1 voxel
    truth[2:4, 2:4, 2:6] = True           # stage-1 voxels (1, 1, 1) and (1, 1, 2)
    r = ss.stray(seg, np.zeros(truth.shape, np.float32), (4.0, 4.0, 4.0), truth, away_mm=10.0)
    ml = 8.0 ** 3 / 1000
    assert r == {"kidney": 2, "found": 1, "called": pytest.approx(4 * ml), "stray": pytest.approx(2 * ml),
                 "stray_roi": pytest.approx(3 * ml), "by_tissue": {}}
    assert ss._summed([r])["near_share"] == pytest.approx(0.5)   # 2 of the 4 called voxels are near
    # with the phantom's tissue map: what the stray voxels (at 0.5) were painted as
    tissue = np.full(truth.shape, TISSUE_ID["visceral_fat"], np.uint8)
    tissue[10:12, 10:12, 8:10] = TISSUE_ID["spleen"]     # stage-1 voxel (5, 5, 4)
    tissue[10:12, 10:12, 10:12] = 200                    # (5, 5, 5): a tissue drawn for a lesion
    by = ss.stray(seg, np.zeros(truth.shape, np.float32), (4.0, 4.0, 4.0), truth, 10.0, tissue)["by_tissue"]
    assert by == {"spleen": pytest.approx(ml), "lesion tissue": pytest.approx(ml)}
    r0 = ss.stray(seg, np.zeros(truth.shape, np.float32), (4.0, 4.0, 4.0), truth, away_mm=0.0)
    assert r0["stray"] == pytest.approx(3 * ml)   # at 0 mm the near voxel counts too
    # the lesions inside a ROI's dilated component (grown from the voxels at >= 0.1): one lesion voxel
    # on the called kidney, one two stage-1 voxels from any call, beyond the dilation (about 1 voxel)
    masses = np.zeros_like(truth)
    masses[2:4, 2:4, 4:6] = True                                  # stage-1 voxel (1, 1, 2): inside
    masses[6:8, 6:8, 4:6] = True                                  # stage-1 voxel (3, 3, 2): outside
    r = ss.stray(seg, np.zeros(truth.shape, np.float32), (4.0, 4.0, 4.0), truth, 10.0, masses=masses)
    assert (r["masses"], r["masses_in_roi"]) == (2, 1)
    none = ss.stray(seg, np.zeros(truth.shape, np.float32), (4.0, 4.0, 4.0), np.zeros_like(truth), 10.0)
    assert none["kidney"] == 0 and none["stray"] == pytest.approx(4 * ml)  # no kidney: all of it is stray


def test_cli_prints_each_case_and_a_sum_per_folder(tmp_path, capsys, load_script):
    ss = load_script("stage1_stray")
    w = tmp_path / "w"
    save_weights(KidneyNet("tiny", seed=1), w / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), w / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    data = tmp_path / "data"
    phantom.write_dataset(data, 2, seed=3, preset="tiny", tissue=True)
    assert all((d / "tissue.nii.gz").is_file() for d in data.glob("case_*"))
    assert ss.main([str(data), "--weights", str(w)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^(case_\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$", out, re.M)  # ... masses in ROI
    assert len(rows) == 2 and all(0 <= float(f) <= 1 and float(s) <= float(sr) and 0 <= float(m) <= 1
                                  for _, f, s, sr, m in rows)
    total = re.search(r"2 cases: found [\d.]+; stray ([\d.]+) ml \(at the ROI threshold ([\d.]+) ml\); "
                      r"cases with stray: (\d)", out)
    assert total and float(total[1]) == pytest.approx(sum(float(r[2]) for r in rows), abs=0.11)
    assert int(total[3]) == sum(float(r[2]) > 0 for r in rows)
    assert float(total[1]) > 0, "the random stage 1 should stray for this test to mean anything"
    painted = re.search(r"stray painted as: (.+)$", out, re.M)
    assert painted and sum(float(v) for v in re.findall(r" ([\d.]+) ml", painted[1])) == \
        pytest.approx(float(total[1]), abs=0.5)
    # two folders: each summed, then pooled; --json writes the same sums
    other = tmp_path / "other"
    phantom.write_dataset(other, 1, seed=4, preset="tiny")
    assert ss.main([str(data), str(other), "--weights", str(w), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    sums = json.loads((tmp_path / "s.json").read_text())
    assert set(sums) == {str(data), str(other), "all"} and sums["all"]["cases"] == 3
    for key in ("called", "stray"):
        assert sums["all"][key] == pytest.approx(sums[str(data)][key] + sums[str(other)][key])
    assert sums["all"]["near_share"] == pytest.approx(1 - sums["all"]["stray"] / sums["all"]["called"])
    pooled = re.search(r"all 2 folders +3 cases: .*called kidney ([\d.]+) ml, near share ([\d.]+); "
                       r"masses inside a ROI ([\d.]+)$", out, re.M)
    assert pooled and float(pooled[2]) == pytest.approx(sums["all"]["near_share"], abs=5e-4)
    assert sums["all"]["masses_in_roi"] == sums[str(data)]["masses_in_roi"] + sums[str(other)]["masses_in_roi"]
    assert float(pooled[3]) == pytest.approx(sums["all"]["masses_in_roi"] / sums["all"]["masses"], abs=5e-4)
    with pytest.raises(SystemExit):
        ss.main([])
    assert "give DATA folders or --real-ct" in capsys.readouterr().err


def test_real_ct_is_scored_on_its_two_kidney_labels(repo_data, capsys, load_script):
    ss = load_script("stage1_stray")
    assert ss.main(["--real-ct", "--weights", "varied"]) == 0
    out = capsys.readouterr().out
    m = re.search(r"real CT +1 cases: found ([\d.]+); stray ([\d.]+) ml \(at the ROI threshold ([\d.]+) ml\)", out)
    assert m and 0.5 <= float(m[1]) <= 1 and float(m[2]) <= float(m[3]), out
