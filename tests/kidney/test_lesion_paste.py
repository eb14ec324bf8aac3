"""Lesions of one label map pasted into another's kidneys (``kidney.phantom.lesion_paste``)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage

from kidney import cli, io
from kidney.phantom.lesion_paste import Lesion, lesions_of, paste_lesions

SPACING = (2.0, 2.0, 2.0)  # 8 µl a voxel


def _map_with_lesions():
    lab = np.zeros((20, 30, 30), np.uint8)
    lab[2:18, 4:26, 4:14] = 1
    lab[4:10, 6:12, 6:12] = 2          # a tumour (216 voxels, 1.728 ml) ...
    lab[6:8, 8:10, 8:10] = 3           # ... with a cyst inside it: one lesion
    lab[12:16, 16:20, 6:10] = 3        # a cyst (64 voxels, 0.512 ml)
    lab[16, 24, 12] = 2                # one voxel: under min_ml
    return lab


def test_lesions_of_cuts_each_lesion_with_its_own_labels():
    lab = _map_with_lesions()
    found = lesions_of(lab, SPACING, "case_x")
    assert [(l.kind, round(l.ml, 3)) for l in found] == [("tumour", 1.728), ("cyst", 0.512)]
    tumour = found[0]
    assert tumour.source == "case_x" and tumour.spacing == SPACING
    assert tumour.labels.shape == (8, 8, 8)                    # its box and one voxel of 0 around it
    assert np.array_equal(tumour.labels[1:-1, 1:-1, 1:-1], lab[4:10, 6:12, 6:12])
    assert tumour.labels[0].max() == tumour.labels[-1].max() == tumour.labels[:, 0].max() == 0
    assert np.count_nonzero(tumour.labels == 3) == 8           # the cyst inside it kept its label
    assert len(lesions_of(lab, SPACING, "case_x", min_ml=0.0)) == 3


def _kidney(shape=(40, 40, 40)):
    lab = np.zeros(shape, np.uint8)
    z, y, x = np.indices(shape)
    lab[((z - 20) / 14.0) ** 2 + ((y - 20) / 12.0) ** 2 + ((x - 20) / 9.0) ** 2 <= 1] = 1
    return lab


def _donor(kind_label=2, r=3):
    box = np.zeros((2 * r + 3,) * 3, np.uint8)
    z, y, x = np.indices(box.shape)
    box[(z - r - 1) ** 2 + (y - r - 1) ** 2 + (x - r - 1) ** 2 <= r * r] = kind_label
    return Lesion(box, SPACING, "case_donor")


def test_paste_is_seeded_writes_lesions_on_kidney_or_background_only():
    lab = _kidney()
    lab[18:22, 18:22, 18:22] = 3        # a lesion already there is never overwritten
    donors = [_donor(2), _donor(3, r=2)]
    before = lab.copy()
    a, pasted_a = paste_lesions(lab, SPACING, donors, np.random.default_rng(5), n=2)
    b, pasted_b = paste_lesions(lab, SPACING, donors, np.random.default_rng(5), n=2)
    assert np.array_equal(lab, before)                         # the input is not modified
    assert np.array_equal(a, b) and pasted_a == pasted_b       # same seed, same bits
    assert a.dtype == np.uint8 and a.shape == lab.shape and len(pasted_a) == 2
    changed = a != lab
    assert changed.any()
    assert set(np.unique(lab[changed])) <= {0, 1} and set(np.unique(a[changed])) <= {2, 3}
    assert np.array_equal(a[18:22, 18:22, 18:22], lab[18:22, 18:22, 18:22])
    most = sum(np.count_nonzero(d.labels) for d in pasted_a) * 1.2 ** 3 * 1.5
    assert changed.sum() <= most                               # scaled 0.8-1.2, not more
    c, _ = paste_lesions(lab, SPACING, donors, np.random.default_rng(6), n=2)
    assert not np.array_equal(a, c)                            # another seed, another place


def test_a_pasted_lesion_is_centred_on_a_kidney_voxel():
    lab = _kidney()
    to_kidney = ndimage.distance_transform_edt(lab != 1)     # voxels to the nearest kidney voxel
    for seed in range(8):
        out, pasted = paste_lesions(lab, SPACING, [_donor(2)], np.random.default_rng(seed))
        assert len(pasted) == 1
        centre = tuple(np.round(np.argwhere(out != lab).mean(axis=0)).astype(int))
        assert to_kidney[centre] <= 1.0                        # the box's centroid, rounded


def test_a_donor_too_large_for_the_kidney_is_not_pasted():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[10:14, 10:14, 10:14] = 1        # 64 voxels of kidney
    out, pasted = paste_lesions(lab, SPACING, [_donor(2, r=4)], np.random.default_rng(0), tries=5)
    assert pasted == [] and np.array_equal(out, lab)
    out, pasted = paste_lesions(np.zeros((9, 9, 9), np.uint8), SPACING, [_donor()], np.random.default_rng(0))
    assert pasted == []                                        # no kidney: nothing to paste into
    thin = np.zeros((3, 9, 9), np.uint8)
    thin[1, 2:7, 2:7] = 2                                      # one 0.2 mm slice: gone on a 2 mm grid
    out, pasted = paste_lesions(_kidney(), SPACING, [Lesion(thin, (0.2, 2.0, 2.0), "case_thin")],
                                np.random.default_rng(0), tries=5)
    assert pasted == [] and np.array_equal(out, _kidney())     # nothing claimed that was not pasted
    inside = np.zeros((30, 30, 30), np.uint8)
    inside[5:25, 5:25, 5:25] = 2                               # a large tumour ...
    inside[15, 15, 15] = 1                                     # ... round the one kidney voxel left
    z, y, x = np.indices((11, 11, 11))
    shell = np.where(np.abs(np.sqrt((z - 5) ** 2 + (y - 5) ** 2 + (x - 5) ** 2) - 4) <= 0.75, 3, 0)
    out, pasted = paste_lesions(inside, SPACING, [Lesion(shell.astype(np.uint8), SPACING, "case_shell")],
                                np.random.default_rng(0), tries=5)
    assert pasted == [] and np.array_equal(out, inside)        # every voxel on the tumour: none written


def test_paste_refuses_bad_input():
    with pytest.raises(ValueError, match="no donor lesions"):
        paste_lesions(_kidney(), SPACING, [], np.random.default_rng(0))
    with pytest.raises(ValueError, match="3D label map"):
        paste_lesions(np.zeros((4, 4), np.uint8), SPACING, [_donor()], np.random.default_rng(0))


def test_cli_pastes_lesions_of_the_other_maps_seeded(kits_sample, tmp_path, capsys):
    grid = (4.0, 3.5, 3.5)
    args = ["phantom", "--from-labels", str(kits_sample), "-n", "2", "--grid", "4,3.5,3.5",
            "--paste-lesions", "1", "--seed", "3"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert "--paste-lesions: 7 lesions of 3 label maps" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "a" / "phantoms.csv").open()))
    for row in rows:
        source = row["source"].split()[1]
        assert "pasted case_" in row["source"] and f"pasted {source}" not in row["source"]
        plain = io.load_nifti(kits_sample / source / "segmentation.nii.gz", label=True)
        plain = io.resample(plain.array, plain.spacing, grid, order=0)
        seg = io.load_nifti(tmp_path / "a" / row["case"] / "segmentation.nii.gz", label=True).array
        assert np.count_nonzero(seg >= 2) > np.count_nonzero(plain >= 2)
        assert np.array_equal(seg[seg < 2], plain[seg < 2])   # only lesions were added
    assert cli.main(args + ["--out", str(tmp_path / "b")]) == 0
    for row in rows:                                           # same seed, same bits
        for name in ("imaging.nii.gz", "segmentation.nii.gz"):
            assert (tmp_path / "a" / row["case"] / name).read_bytes() == \
                (tmp_path / "b" / row["case"] / name).read_bytes()
    capsys.readouterr()
    assert cli.main(args[:-4] + ["--paste-lesions", "1.5", "--out", str(tmp_path / "c")]) == 2
    assert "--paste-lesions is a share of the CTs, in [0, 1], got 1.5" in capsys.readouterr().err
    assert cli.main(["phantom", "--out", str(tmp_path / "d"), "--paste-lesions", "0.5"]) == 2
    assert "apply to --from-labels only" in capsys.readouterr().err
