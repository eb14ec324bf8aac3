"""The shipped weights on the one real CT in the repository (data/totalseg_example, non-contrast,
3 mm). A test case only — nothing was trained on this CT or chosen with it.

The ``varied`` weights' stage 1 puts both kidneys inside its ROIs and proposes no ROI elsewhere, and
stage 2 labels half or more of each kidney;
the ``phantoms`` weights (trained on enhanced phantoms only) propose no ROI at all. The kidney+masses
Dice target (0.85) is not reached yet by either set (kidney/weights/README.md), so the script's
``--min-dice`` check is tested as a check: it fails a result below its threshold.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _run(repo_data, *args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "eval_real_ct.py"), "--data",
                           str(repo_data / "totalseg_example"), *args],
                          capture_output=True, text=True, timeout=600)


def test_varied_weights_find_both_kidneys_and_nothing_else(repo_data, tmp_path):
    png = tmp_path / "real_ct.png"
    run = _run(repo_data, "--weights", "varied", "--png", str(png))
    assert run.returncode == 0, run.stdout + run.stderr
    m = re.search(r"ROI boxes hold right ([\d.]+), left ([\d.]+) of each kidney; ROIs away from the "
                  r"kidneys: (\d+)", run.stdout)
    assert m, run.stdout
    assert float(m.group(1)) >= 0.95 and float(m.group(2)) >= 0.95 and int(m.group(3)) == 0
    found = re.search(r"kidneys found \(share of each labelled\): right ([\d.]+), left ([\d.]+)", run.stdout)
    assert found and float(found.group(1)) >= 0.5 and float(found.group(2)) >= 0.5, run.stdout
    dice = float(run.stdout.split("kidney+masses Dice ")[1].split()[0])
    assert 0.0 < dice <= 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the false positives, by organ: each row's calls add up to its voxels, the rows to the total
    total = int(re.search(r"false positives: (\d+) voxels", run.stdout).group(1))
    predicted, truth = (int(v) for v in re.search(r"predicted (\d+) voxels, truth (\d+)", run.stdout).groups())
    rows = re.findall(r"^  (\S+) +(\d+) +(\d+) +(\d+) +(\d+) +(-?\d+)$", run.stdout, re.M)
    assert rows and all(int(r[1]) == int(r[2]) + int(r[3]) + int(r[4]) for r in rows), run.stdout
    more = re.search(r"more labels, (\d+) voxels\)", run.stdout)
    assert sum(int(r[1]) for r in rows) + (int(more.group(1)) if more else 0) == total
    assert predicted - total <= truth  # the rest of the prediction lies on the labelled kidneys
    # the prediction's parts add up to it, each part to its organs
    n_parts = int(re.search(r"predicted parts \(26-connected\): (\d+)", run.stdout).group(1))
    parts = re.findall(r"^  +(\d+): (.+)$", run.stdout, re.M)
    assert 1 <= len(parts) <= n_parts and len(parts) == min(n_parts, 4)
    for size, where in parts:
        assert int(size) == sum(int(v) for v in re.findall(r" (\d+)(?:,|$)", where)), where
    rest = re.search(r"\((\d+) more parts, (\d+) voxels\)", run.stdout)
    assert sum(int(s) for s, _ in parts) + (int(rest.group(2)) if rest else 0) == predicted
    # stage 1 by organ: counts nest (voxels >= those over the ROI threshold >= those over 0.5)
    s1 = re.findall(r"^  (kidneys|liver|spleen) +(\d+) +(\d+) +(\d+) +([\d.]+)$", run.stdout, re.M)
    assert [r[0] for r in s1] == ["kidneys", "liver", "spleen"], run.stdout
    assert all(int(r[1]) >= int(r[2]) >= int(r[3]) for r in s1)
    kidneys = s1[0]
    assert int(kidneys[3]) > 0 and float(kidneys[4]) >= 0.5  # stage 1 finds both kidneys (above)
    cores = re.search(r"its ROI components \(before dilation\) cover (\d+) scan voxels: (.+)$", run.stdout, re.M)
    assert cores and int(cores.group(1)) == sum(int(v) for v in re.findall(r" (\d+)(?:,|$)", cores.group(2)))


def test_label_names_come_from_the_files_label_table(repo_data, load_script):
    script = load_script("eval_real_ct")
    names = script.label_names(repo_data / "totalseg_example" / "example_seg.nii.gz")
    assert names[1] == "spleen" and names[2] == "kidney_right" and names[3] == "kidney_left"
    assert names[5] == "liver"
    assert script.label_names(repo_data / "totalseg_example" / "example_ct_sm.nii.gz") == {}


def test_min_dice_is_a_real_check(repo_data):
    run = _run(repo_data, "--weights", "varied", "--min-dice", "1.01")
    assert run.returncode == 1 and "FAIL" in run.stdout and "needs >= 1.01" in run.stdout


def test_missing_data_is_one_clear_error(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "eval_real_ct.py"), "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "example_ct_sm.nii.gz is missing" in run.stderr


def test_probe_rows_start_from_the_ct_as_is(repo_data):
    run = _run(repo_data, "--weights", "varied", "--probe")
    assert run.returncode == 0, run.stdout + run.stderr
    dice = run.stdout.split("kidney+masses Dice ")[1].split()[0]
    rows = re.findall(r"^(as is|liver\+spleen|kidneys|noise|blur|liver:|spleen:).*?  (\d\.\d{3})  ",
                      run.stdout, re.M)
    assert len(rows) == 23, run.stdout
    assert rows[0] == ("as is", f"{float(dice):.3f}")
    assert len({d for _, d in rows}) > 1  # the changes move the answer
    assert "blur 0.7: stage 1 only" in run.stdout and "blur 0.7: stage 2 only" in run.stdout


def test_each_stage_can_read_its_own_ct(load_script, tmp_path):
    """segment_per_stage with both stages reading the same CT is the segmenter itself, bit for bit;
    with stage 1 reading another, its ROIs (and so the labels) follow that one."""
    from kidney import io, phantom
    from kidney.model import KidneyNet
    from kidney.pipeline import Segmenter
    ev = load_script("eval_real_ct")
    case = phantom.make_phantom(seed=3, preset="tiny")
    io.save_array(case.image.astype(np.int16), np.diag([*case.spacing[::-1], 1.0]), tmp_path / "ct.nii.gz")
    ct = io.load_nifti(tmp_path / "ct.nii.gz")
    seg = Segmenter((KidneyNet("tiny", seed=1), {"stage": 1, "spacing_mm": 8.0}),
                    (KidneyNet("tiny", seed=2), {"stage": 2, "spacing_mm": 4.0}))
    hu = ct.array
    np.testing.assert_array_equal(ev.segment_per_stage(seg, ct, hu, hu), seg.segment(ct))
    blank = np.full_like(hu, -1000.0)   # nothing in stage 1's window: no ROI, all background
    assert not ev.segment_per_stage(seg, ct, blank, hu).any()


def test_coarse_component_stays_inside_the_organ(load_script):
    """The probes' coarse part of an organ: a flat organ's is flat (no fat leaks in at its edge), a
    gradient across it survives, a checkerboard (the finest texture) is gone, and the HU outside
    the organ are returned as they are."""
    mod = load_script("eval_real_ct")
    hu = np.full((12, 24, 24), -100.0, np.float32)
    organ = np.zeros(hu.shape, bool)
    organ[2:10, 4:20, 4:20] = True
    hu[organ] = 50.0
    assert np.allclose(mod.coarse_component(hu, organ)[organ], 50.0, atol=1e-3)
    z, y, x = np.indices(hu.shape)
    checker = np.where(organ, 50.0 + 10.0 * (-1.0) ** (z + y + x) + 0.5 * x, hu).astype(np.float32)
    coarse = mod.coarse_component(checker, organ)
    inner = organ.copy()
    inner[:, :, :6] = inner[:, :, 18:] = False
    assert np.abs(coarse - (50.0 + 0.5 * x))[inner].max() < 1.5           # the gradient survives
    assert np.array_equal(coarse[~organ], checker[~organ])


def test_edge_line_splits_the_kidney_at_the_scans_ends(load_script):
    """Found shares in the slices at either end of the scan and elsewhere, with their voxel counts;
    'n/a' where no kidney lies."""
    mod = load_script("eval_real_ct")
    truth = np.zeros((12, 4, 4), bool)
    truth[6:12, 1:3, 1:3] = True                 # 24 voxels; slices 8-11 are the last four
    pred = truth.copy()
    pred[10:12] = False                          # half of the edge slices' 16 voxels missed
    line = mod.edge_line(pred, truth)
    assert "either end of the scan 0.50 (of 16 voxels)" in line and "elsewhere 1.00 (of 8 voxels)" in line
    assert "elsewhere n/a (of 0 voxels)" in mod.edge_line(pred[8:], truth[8:])
