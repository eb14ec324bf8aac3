"""The ``kidney`` command: phantom and evaluate subcommands, errors and exit codes."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidney import cli, io

REPO = Path(__file__).resolve().parents[2]


def test_phantom_writes_kits_layout_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "phantoms"
    assert cli.main(["phantom", "--out", str(out), "-n", "2", "--seed", "4", "--preset",
                     "tiny"]) == 0
    cases = sorted(p.name for p in out.iterdir())
    assert cases == ["case_00000", "case_00001"]
    case = io.load_case(out / "case_00001", label=True)
    assert set(np.unique(case.label.array)) == {0, 1, 2, 3}
    assert case.image.file_axcodes == ("I", "P", "L")
    before = (out / "case_00000" / "imaging.nii.gz").read_bytes()
    capsys.readouterr()
    assert cli.main(["phantom", "--out", str(out), "-n", "1", "--seed", "9", "--preset",
                     "tiny"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "case_00000" / "imaging.nii.gz").read_bytes() == before
    assert cli.main(["phantom", "--out", str(out), "-n", "1", "--seed", "4", "--preset", "tiny",
                     "--overwrite"]) == 0
    assert (out / "case_00000" / "imaging.nii.gz").read_bytes() == before  # same seed, same case


def test_phantom_from_labels_keeps_grid_and_labels(cropped_kits_labels, tmp_path):
    labels, spacing = cropped_kits_labels
    labels = np.ascontiguousarray(labels[::3, ::2, ::2])  # real labels, coarser grid: faster
    spacing = (spacing[0] * 3, spacing[1] * 2, spacing[2] * 2)
    src = tmp_path / "data" / "case_00479"
    src.mkdir(parents=True)
    io.save_array(labels, io.kits_affine(spacing), src / "segmentation.nii.gz")
    out = tmp_path / "synth"
    assert cli.main(["phantom", "--out", str(out), "--from-labels", str(tmp_path / "data"),
                     "--phase", "nephrographic"]) == 0
    img = nib.load(str(out / "case_00479" / "imaging.nii.gz"))
    seg = nib.load(str(src / "segmentation.nii.gz"))
    assert img.shape == seg.shape and np.array_equal(img.affine, seg.affine)
    back = nib.load(str(out / "case_00479" / "segmentation.nii.gz"))
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(seg.dataobj))


def _labels(shape=(6, 8, 8)):
    lab = np.zeros(shape, np.uint8)
    lab[1:5, 2:6, 1:5] = 1
    lab[2:4, 3:5, 2:4] = 2
    return lab


def test_evaluate_writes_official_csv_and_reports_problems(tmp_path, capsys):
    data, pred = tmp_path / "data", tmp_path / "pred"
    for cid in ("case_00000", "case_00001", "case_00002"):
        io.save_array(_labels(), np.eye(4), data / cid / "segmentation.nii.gz")
    io.save_array(_labels(), np.eye(4), pred / "case_00000.nii.gz")
    io.save_array(_labels((6, 8, 9)), np.eye(4), pred / "case_00002" / "segmentation.nii.gz")
    assert cli.main(["evaluate", str(pred), str(data)]) == 1
    captured = capsys.readouterr()
    assert "case_00001" in captured.err and "missing prediction" in captured.err
    assert "case_00002" in captured.err and "(6, 8, 9)" in captured.err
    assert "Surface Dice" in captured.out
    rows = list(csv.reader((pred / "evaluation.csv").open()))
    assert rows[0] == ["caseID", "Dice_kidney", "Dice_masses", "Dice_tumor", "SD_kidney",
                       "SD_masses", "SD_tumor"]
    assert rows[1] == ["case_00000"] + ["1.00000000"] * 6
    assert rows[2][1:] == ["0.00000000"] * 6 and rows[3][1:] == ["0.00000000"] * 6
    assert rows[4][0] == "average" and float(rows[4][1]) == pytest.approx(1 / 3, abs=1e-8)
    assert cli.main(["evaluate", str(pred), str(data)]) == 2  # CSV exists
    assert "--overwrite" in capsys.readouterr().err
    io.save_array(_labels(), np.eye(4), pred / "case_00001.nii.gz")
    io.save_array(_labels(), np.eye(4), pred / "case_00002" / "segmentation.nii.gz",
                  overwrite=True)
    out_csv = tmp_path / "scores.csv"
    assert cli.main(["evaluate", str(pred), str(data), "--out", str(out_csv)]) == 0
    assert list(csv.reader(out_csv.open()))[-1] == ["average"] + ["1.00000000"] * 6


def test_evaluate_missing_folder_is_an_error(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_parser_structure_and_module_entry_point():
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2
    names = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert {"phantom", "evaluate"} <= names
    done = subprocess.run([sys.executable, "-m", "kidney.cli", "phantom", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--from-labels" in done.stdout


def test_phantom_figure_example(tmp_path):
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import phantom_figure
    finally:
        sys.path.pop(0)
    out = phantom_figure.main(["--out", str(tmp_path / "fig.png"), "--preset", "tiny",
                               "--labels", ""])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
