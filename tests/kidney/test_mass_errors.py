"""scripts/mass_errors.py: false masses and missed lesion voxels, counted on a hand-made case."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mass_errors.py"


def _write(path, labels, spacing=(10.0, 10.0, 10.0)):  # 1 ml voxels
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def test_counts_by_tissue_and_phase(tmp_path):
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:8, 2:8, 2:8] = 1          # kidney, 216 voxels
    ref[2:4, 2:4, 2:4] = 2          # a tumour of 8 voxels
    pred = ref.copy()
    pred[2:4, 2:4, 2:3] = 1         # 4 tumour voxels called kidney
    pred[6:8, 6:8, 6:7] = 3         # 4 normal-kidney voxels called a cyst
    pred[0, 0, 0:2] = 2             # 2 background voxels called tumour
    data, out = tmp_path / "data", tmp_path / "pred"
    _write(data / "case_00000" / "segmentation.nii.gz", ref)
    _write(data / "case_00000" / "imaging.nii.gz", np.zeros_like(ref))
    _write(out / "case_00000.nii.gz", pred)
    (data / "phantoms.csv").write_text("case,seed,phase,appearance,spacing_mm,source\n"
                                       "case_00000,1,nephrographic,varied,10 10 10,test\n")
    run = subprocess.run([sys.executable, str(SCRIPT), str(out), str(data)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    row = next(line.split() for line in run.stdout.splitlines() if line.startswith("case_00000"))
    assert row[1] == "nephrographic"
    got = [float(v) for v in row[2:]]
    # ref 8 voxels, pred 4 + 4 + 2 = 10, overlap 4: Dice 8/18
    expect = [8.0, 10.0, 8 / 18, 4.0, 2.0, 4.0, 0.0, 0.0]  # neither false mass touches the tumour
    assert np.allclose(got, expect, atol=5e-4), (got, expect)  # printed to 0.1 ml / 0.001
    assert "nephrographic       1 cases  masses Dice 0.444" in run.stdout
    assert "(67% on normal kidney, 0% joined to a found lesion)" in run.stdout
    assert "(0% called background)" in run.stdout


def test_missing_prediction_is_an_error(tmp_path):
    ref = np.ones((4, 4, 4), np.uint8)
    _write(tmp_path / "data" / "case_00003" / "segmentation.nii.gz", ref)
    (tmp_path / "pred").mkdir()
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "pred"), str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no prediction" in run.stderr and "case_00003" in run.stderr


def test_false_masses_joined_to_a_found_lesion_are_told_apart(tmp_path):
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:10, 2:10, 2:10] = 1       # kidney
    ref[3:5, 3:5, 3:5] = 3          # a cyst of 8 voxels
    pred = ref.copy()
    pred[5, 3:5, 3:5] = 3           # the cyst drawn one slice too deep: 4 false voxels joined to it
    pred[5, 5, 5] = 3               # diagonal to those: still the same 26-connected part
    pred[8, 8, 8] = 2               # a false mass of its own
    data, out = tmp_path / "data", tmp_path / "pred"
    _write(data / "case_00000" / "segmentation.nii.gz", ref)
    _write(data / "case_00000" / "imaging.nii.gz", np.zeros_like(ref))
    _write(out / "case_00000.nii.gz", pred)
    run = subprocess.run([sys.executable, str(SCRIPT), str(out), str(data)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    row = next(line.split() for line in run.stdout.splitlines() if line.startswith("case_00000"))
    got = [float(v) for v in row[1:]]  # no phantoms.csv: no phase column
    assert np.allclose(got, [8.0, 14.0, 16 / 22, 6.0, 0.0, 0.0, 0.0, 5.0], atol=5e-4), got
    assert "6.0 ml (100% on normal kidney, 83% joined to a found lesion)" in run.stdout
