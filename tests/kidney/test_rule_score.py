"""scripts/rule_score.py: the choosing rules' figures, read back from the files a scoring run writes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _write(prefix: Path, dice: dict, half: float, free_with_roi: int, near):
    for s, (k, m, t) in dice.items():
        d = Path(f"{prefix}.{s}")
        d.mkdir(parents=True)
        (d / "evaluation.csv").write_text("caseID,Dice_kidney,Dice_masses,Dice_tumor\n"
                                          "case_00000,1.0,1.0,1.0\n" f"average,{k},{m},{t}\n")
    Path(f"{prefix}.fov.json").write_text(json.dumps({
        "no-kidney": {"slabs": 20, "with_roi": free_with_roi, "dice": None, "labelled_ml": 3.0},
        "half": {"slabs": 20, "with_roi": 20, "dice": half, "labelled_ml": 0.0}}))
    if near is not None:
        Path(f"{prefix}.stray.json").write_text(json.dumps({"a": {"near_share": 0.1}, "all": {"near_share": near}}))


def test_figures_are_the_means_the_rules_name(tmp_path, capsys, load_script):
    rs = load_script("rule_score")
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, {"val": (0.9, 0.6, 0.3), "valn": (0.9, 0.5, 0.4), "valt": (0.8, 0.5, 0.2)}, 0.7, 5, 0.6)
    _write(b, {"val": (0.9, 0.6, 0.3), "valn": (0.9, 0.5, 0.4), "valt": (0.8, 0.5, 0.2)}, 0.7, 15, None)
    f = rs.figures(str(a))
    assert f["val"] == pytest.approx(0.6) and f["valn"] == pytest.approx(0.6) and f["valt"] == pytest.approx(0.5)
    assert f["free"] == pytest.approx(0.75) and f["near"] == pytest.approx(0.6)   # the pooled share, not a folder's
    assert f["rule"] == pytest.approx((0.6 + 0.6 + 0.5 + 0.7) / 4)
    assert f["stage1_rule"] == pytest.approx((0.6 + 0.6 + 0.5 + 0.7 + 0.75 + 0.6) / 6)
    g = rs.figures(str(b))
    assert g["near"] is None and g["stage1_rule"] is None and g["rule"] == pytest.approx(f["rule"])
    assert rs.main([str(a), "--base", str(b)]) == 0
    row = re.search(r"^a +(.*)$", capsys.readouterr().out, re.M)[1].split()
    assert row[-4:] == [f"{f['stage1_rule']:.4f}", "+0.0000", "/", "—"]


def test_missing_files_are_named(tmp_path, load_script):
    rs = load_script("rule_score")
    with pytest.raises(SystemExit, match=r"c\.val.evaluation\.csv"):
        rs.figures(str(tmp_path / "c"))
