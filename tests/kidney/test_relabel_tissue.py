"""scripts/relabel_tissue.py: a phantom folder copied with chosen tissues given another label."""
from __future__ import annotations

import numpy as np
import pytest

from kidney import io, phantom
from kidney.phantom import TISSUE_ID


def test_the_collecting_system_becomes_background_and_nothing_else_changes(tmp_path, load_script, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    phantom.write_dataset(src, 2, seed=3, preset="tiny", tissue=True)
    script = load_script("relabel_tissue")
    assert script.main([str(src), str(dst), "--tissue", "collecting_system", "--label", "0"]) == 0
    out = capsys.readouterr().out
    changed = 0
    for case in sorted(src.glob("case_*")):
        before = io.load_case(case, label=True).label.array
        after = io.load_case(dst / case.name, label=True).label.array
        tissue = io.load_nifti(case / "tissue.nii.gz").array
        system = tissue == TISSUE_ID["collecting_system"]
        # the CT copied byte for byte
        assert (dst / case.name / io.IMAGE_NAME).read_bytes() == (case / io.IMAGE_NAME).read_bytes()
        assert np.all(after[system] == 0)
        np.testing.assert_array_equal(after[~system], before[~system])
        n = int((system & (before != 0)).sum())
        assert f"{case.name}: {n} voxels relabelled 0" in out
        changed += n
    assert changed > 0  # the tiny phantoms do paint a collecting system labelled kidney
    assert f"2 cases written to {dst}: {changed} voxels relabelled 0" in out


def test_bad_input_is_named(tmp_path, load_script, capsys):
    script = load_script("relabel_tissue")
    plain = tmp_path / "plain"
    phantom.write_dataset(plain, 1, seed=3, preset="tiny")
    for argv, message in (([str(plain), str(tmp_path / "d1"), "--tissue", "collecting_system", "--label", "0"],
                           "write the phantoms with kidney phantom --tissue"),
                          ([str(tmp_path / "none"), str(tmp_path / "d2"), "--tissue", "liver", "--label", "0"],
                           "holds no case_* folders"),
                          ([str(plain), str(plain), "--tissue", "bone", "--label", "0"], "invalid choice"),
                          ([str(plain), str(tmp_path / "d3"), "--tissue", "liver", "--label", "7"], "invalid choice")):
        with pytest.raises(SystemExit):
            script.main(argv)
        assert message in capsys.readouterr().err
    with_tissue = tmp_path / "t"
    phantom.write_dataset(with_tissue, 1, seed=3, preset="tiny", tissue=True)
    with pytest.raises(SystemExit):
        script.main([str(with_tissue), str(plain), "--tissue", "liver", "--label", "0"])
    assert "exists; choose a new folder" in capsys.readouterr().err
