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
    cases = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert cases == ["case_00000", "case_00001"]
    assert (out / "phantoms.csv").is_file()               # how each case was made
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


def test_phantom_tissue_map_is_written_beside_the_same_ct(cropped_kits_labels, tmp_path, capsys):
    from kidney.phantom import TISSUES, tissue_name
    labels, spacing = cropped_kits_labels
    labels = np.ascontiguousarray(labels[::3, ::2, ::2])
    spacing = (spacing[0] * 3, spacing[1] * 2, spacing[2] * 2)
    src = tmp_path / "data" / "case_00479"
    src.mkdir(parents=True)
    io.save_array(labels, io.kits_affine(spacing), src / "segmentation.nii.gz")
    for grid in ("native", "4,3.5,3.5"):
        outs = {}
        for name, extra in (("plain", []), ("tissue", ["--tissue"])):
            outs[name] = tmp_path / f"{name}_{grid}"
            assert cli.main(["phantom", "--out", str(outs[name]), "--from-labels", str(tmp_path / "data"),
                             "--appearance", "varied", "--grid", grid, *extra]) == 0
        case = outs["tissue"] / "case_00479"
        for f in ("imaging.nii.gz", "segmentation.nii.gz"):  # the same bits with or without it
            assert np.array_equal(np.asarray(nib.load(str(case / f)).dataobj),
                                  np.asarray(nib.load(str(outs["plain"] / "case_00479" / f)).dataobj))
        assert not (outs["plain"] / "case_00479" / "tissue.nii.gz").exists()
        tissue = io.load_nifti(case / "tissue.nii.gz", label=True)
        seg = io.load_nifti(case / "segmentation.nii.gz", label=True)
        assert tissue.shape == seg.shape and np.array_equal(tissue.affine, seg.affine)
        names = {tissue_name(int(i)) for i in np.unique(tissue.array[seg.array == 1])}
        assert names <= {"renal_cortex", "renal_medulla", "collecting_system"}, names
        assert "liver" in {tissue_name(int(i)) for i in np.unique(tissue.array)}
    assert tissue_name(len(TISSUES)) == "lesion tissue"
    mine = tmp_path / "mine" / "case_00479"   # a tissue file already there is kept unless --overwrite
    mine.mkdir(parents=True)
    (mine / "tissue.nii.gz").write_bytes(b"mine")
    assert cli.main(["phantom", "--out", str(mine.parent), "--from-labels", str(tmp_path / "data"),
                     "--grid", "4,3.5,3.5", "--tissue"]) != 0
    assert "tissue.nii.gz exists" in capsys.readouterr().err
    assert (mine / "tissue.nii.gz").read_bytes() == b"mine" and not (mine / "imaging.nii.gz").exists()


def test_phantom_from_labels_on_a_given_grid(cropped_kits_labels, tmp_path, capsys):
    labels, spacing = cropped_kits_labels
    src = tmp_path / "data" / "case_00479"
    src.mkdir(parents=True)
    io.save_array(np.ascontiguousarray(labels), io.kits_affine(spacing), src / "segmentation.nii.gz")
    out = tmp_path / "synth"
    assert cli.main(["phantom", "--out", str(out), "--from-labels", str(tmp_path / "data"),
                     "--grid", "4,3.5,3.5"]) == 0
    img = io.load_nifti(out / "case_00479" / "imaging.nii.gz")
    seg = io.load_nifti(out / "case_00479" / "segmentation.nii.gz", label=True)
    assert img.spacing == pytest.approx((4.0, 3.5, 3.5)) and seg.shape == img.shape
    assert img.shape == io.resampled_shape(labels.shape, spacing, (4.0, 3.5, 3.5))
    assert np.array_equal(seg.array, io.resample(labels, spacing, (4.0, 3.5, 3.5), order=0))
    for bad in ("3,3", "fine", "0,1,1", "1,a,1"):
        with pytest.raises(SystemExit):
            cli.main(["phantom", "--out", str(out), "--from-labels", str(tmp_path / "data"), "--grid", bad])
        assert "--grid must be native, coarse or three spacings" in capsys.readouterr().err


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


def test_train_help_names_every_model_config():
    from kidney.model import CONFIGS
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    help_text = next(a.help for a in train._actions if "--model" in a.option_strings)
    assert all(name in help_text.replace(",", " ").split() for name in CONFIGS), help_text


def test_phantom_appearance_choices_are_the_generators():
    from kidney.phantom import APPEARANCES
    phantom_cmd = cli.build_parser()._subparsers._group_actions[0].choices["phantom"]
    action = next(a for a in phantom_cmd._actions if "--appearance" in a.option_strings)
    assert tuple(action.choices) == APPEARANCES


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


# --- version, python -m kidney ----------------------------------------------------------------------

def test_version_and_python_m_kidney(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"kidney {version('sparseconv')}"
    done = subprocess.run([sys.executable, "-m", "kidney", "--version"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"kidney {version('sparseconv')}"
    done = subprocess.run([sys.executable, "-m", "kidney", "evaluate", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--voxel-grid" in done.stdout


# --- --device, --threads, first-run notice -----------------------------------------------------------

def _cupy_loads() -> bool:
    from sparseconv.backends import load_backend
    try:
        load_backend("cupy")
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("command", ["segment", "demo", "train"])
def test_device_and_threads_are_on_segment_demo_and_train(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert "--device {cpu,cuda}" in text and "--threads N" in text


def test_device_cuda_without_cupy_or_gpu_is_one_clear_line(tmp_path, capsys):
    if _cupy_loads():
        pytest.skip("CuPy and a GPU are usable here")
    import sparseconv
    before = sparseconv.get_backend()
    for command, *args in (("segment", str(tmp_path / "x.nii.gz")), ("train", "--data", str(tmp_path), "--stage", "1")):
        assert cli.main([command, *args, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"kidney {command}: error: --device cuda needs CuPy and a CUDA GPU: "
                              "pip install sparseconv[gpu] (")
        assert sparseconv.get_backend() is before




def test_threads_sets_numba_and_refuses_out_of_range(tmp_path, capsys):
    import argparse

    import numba
    most = numba.config.NUMBA_NUM_THREADS
    for bad in (0, -1, most + 1):
        assert cli.main(["segment", str(tmp_path / "x.nii.gz"), "--threads", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--threads must be between 1 and {most}" in err and str(bad) in err
    before = numba.get_num_threads()
    try:
        cli._setup_compute(argparse.Namespace(threads=1, device="cpu", command="segment"))
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("cold", [True, False])
def test_first_run_notice_when_the_kernel_cache_is_cold(monkeypatch, capsys, cold):
    import argparse

    from sparseconv.backends import numba_cache
    monkeypatch.setattr(numba_cache, "is_cold", lambda: cold)
    monkeypatch.delenv("SPARSECONV_BACKEND", raising=False)
    cli._setup_compute(argparse.Namespace(threads=None, device="cpu", command="demo"))
    err = capsys.readouterr().err
    assert ("compiling CPU kernels (first run only" in err) == cold


# --- warnings and the demo's output folder ----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from kidney.model import KidneyNet, save_weights
    d = tmp_path_factory.mktemp("weights")
    save_weights(KidneyNet("tiny", seed=1), d / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), d / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    return d


def test_warnings_print_as_one_line(tiny_weights, tmp_path, capsys):
    import warnings
    src = tmp_path / "air.nii.gz"
    io.save_array(np.full((12, 20, 20), -1000, np.int16), np.diag([4.0, 4.0, 5.0, 1.0]), src)
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["segment", str(src), "-o", str(tmp_path / "seg.nii.gz"), "--weights",
                         str(tiny_weights), "--quiet"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "no kidney" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: no kidney found: stage 1 ")
    assert "warnings.warn" not in err and "NoKidneyWarning" not in err and ".py:" not in err
    assert warnings.showwarning is shown  # the CLI's display is only for the command's run


def test_demo_writes_under_out_and_says_where(tiny_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "elsewhere" / "demo"
    assert cli.main(["demo", "--out", str(out), "--preset", "tiny", "--weights", str(tiny_weights),
                     "--no-png"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]  # nothing in the working folder
    assert (out / "pred" / "case_00000.nii.gz").is_file() and (out / "data" / "case_00000").is_dir()
    assert f"all output in {out.resolve()}" in capsys.readouterr().out
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "kidney_demo/" in ignored  # the default --out


# --- evaluate refuses nonsense -----------------------------------------------------------------------

def test_evaluate_labels_outside_0_to_3_are_problems(tmp_path, capsys):
    data, pred = tmp_path / "data", tmp_path / "pred"
    bad_pred = _labels()
    bad_pred[0, 0, :3] = 7
    io.save_array(_labels(), np.eye(4), data / "case_00000" / "segmentation.nii.gz")
    io.save_array(bad_pred, np.eye(4), pred / "case_00000.nii.gz")
    bad_ref = _labels()
    bad_ref[5, 7, 7] = 4
    io.save_array(bad_ref, np.eye(4), data / "case_00001" / "segmentation.nii.gz")
    io.save_array(_labels(), np.eye(4), pred / "case_00001.nii.gz")
    assert cli.main(["evaluate", str(pred), str(data)]) == 1
    err = capsys.readouterr().err
    assert (f"PROBLEM case_00000: prediction {pred / 'case_00000.nii.gz'} holds label value outside 0..3: "
            "7 (3 voxels)") in err
    assert (f"PROBLEM case_00001: reference {data / 'case_00001' / 'segmentation.nii.gz'} holds label "
            "value outside 0..3: 4 (1 voxel)") in err
    rows = list(csv.reader((pred / "evaluation.csv").open()))
    assert rows[1][1:] == rows[2][1:] == ["0.00000000"] * 6


def _grid_case(tmp_path, pred_affine, name):
    data, pred = tmp_path / name / "data", tmp_path / name / "pred"
    ref_affine = np.diag([0.8, 0.8, 2.5, 1.0])
    io.save_array(_labels(), ref_affine, data / "case_00000" / "segmentation.nii.gz")
    io.save_array(_labels(), pred_affine, pred / "case_00000.nii.gz")
    return pred, data


def test_evaluate_refuses_another_grid_unless_voxel_grid(tmp_path, capsys):
    ref = np.diag([0.8, 0.8, 2.5, 1.0])
    shifted = ref.copy()
    shifted[:3, 3] = (0.0, 0.5, 0.0)
    c, s = np.cos(np.radians(5)), np.sin(np.radians(5))
    tilted = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ ref  # 5 degrees about z
    for name, affine, what in (("spacing", np.diag([1.0, 0.8, 2.5, 1.0]), "spacing (2.5, 0.8, 1.0) vs (2.5, 0.8, 0.8) mm"),
                               ("origin", shifted, "origin"), ("direction", tilted, "direction")):
        pred, data = _grid_case(tmp_path, affine, name)
        assert cli.main(["evaluate", str(pred), str(data)]) == 1, name
        err = capsys.readouterr().err
        assert "PROBLEM case_00000:" in err and "is not on the grid of reference" in err and what in err, err
        assert "--voxel-grid" in err
        assert cli.main(["evaluate", str(pred), str(data), "--voxel-grid", "--overwrite"]) == 0, name
        err = capsys.readouterr().err
        assert "warning case_00000:" in err and "scored on voxel indices" in err
        assert list(csv.reader((pred / "evaluation.csv").open()))[1][1:] == ["1.00000000"] * 6


def test_evaluate_accepts_the_same_grid_within_tolerance_or_in_another_axis_order(tmp_path, capsys):
    ref = np.diag([0.8, 0.8, 2.5, 1.0])
    near = ref.copy()
    near[:3, 3] = 0.004  # mm
    near[0, 0] = 0.8 * (1 + 2e-4)
    pred, data = _grid_case(tmp_path, near, "near")
    assert cli.main(["evaluate", str(pred), str(data)]) == 0
    assert "warning" not in capsys.readouterr().err
    # the same grid stored with the first axis reversed (affine adjusted): same voxels in space
    pred, data = tmp_path / "rev" / "pred", tmp_path / "rev" / "data"
    io.save_array(_labels(), ref, data / "case_00000" / "segmentation.nii.gz")
    rev = ref @ np.array([[-1, 0, 0, _labels().shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    io.save_array(np.ascontiguousarray(_labels()[::-1]), rev, pred / "case_00000.nii.gz")
    assert cli.main(["evaluate", str(pred), str(data)]) == 0
    captured = capsys.readouterr()
    assert "PROBLEM" not in captured.err and "warning" not in captured.err
    assert list(csv.reader((pred / "evaluation.csv").open()))[1][1:] == ["1.00000000"] * 6


def test_evaluate_checks_both_folders_before_writing(tmp_path, capsys):
    pred = tmp_path / "preds"
    pred.mkdir()
    (pred / "evaluation.csv").write_text("old\n")
    assert cli.main(["evaluate", str(pred), str(tmp_path / "nodata")]) == 2
    err = capsys.readouterr().err
    assert "nodata" in err and "no such data folder" in err and "exists" not in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["evaluate", str(pred), str(tmp_path / "empty")]) == 2
    assert "holds no case folders" in capsys.readouterr().err
    assert (pred / "evaluation.csv").read_text() == "old\n"


def test_phantom_manifest_and_evaluate_by_phase(tmp_path, capsys):
    """kidney phantom records each case's phase in phantoms.csv; kidney evaluate reports per phase."""
    data = tmp_path / "data"
    assert cli.main(["phantom", "--out", str(data), "-n", "3", "--preset", "tiny", "--phase", "cycle",
                     "--appearance", "varied"]) == 0
    rows = list(csv.DictReader((data / "phantoms.csv").open()))
    assert [r["phase"] for r in rows] == ["noncontrast", "corticomedullary", "nephrographic"]
    assert {r["appearance"] for r in rows} == {"varied"} and [r["case"] for r in rows] == [
        "case_00000", "case_00001", "case_00002"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(data), str(data), "--out", str(tmp_path / "e.csv")]) == 0
    out = capsys.readouterr().out
    assert "by contrast phase" in out
    for phase in ("noncontrast", "corticomedullary", "nephrographic"):
        line = next(l for l in out.splitlines() if l.strip().startswith(phase))
        assert "n=  1  Dice 1.000 / 1.000 / 1.000" in line


def test_phantom_from_labels_split_grid_copies_workers(repo_data, tmp_path, capsys):
    src = repo_data / "kits23_sample"
    out = tmp_path / "out"
    args = ["phantom", "--from-labels", str(src), "--out", str(out), "-n", "1", "--grid", "coarse",
            "--copies", "2", "--workers", "2", "--appearance", "varied", "--phase", "cycle"]
    assert cli.main(args) == 0
    made = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert made == ["case_00061_c0", "case_00061_c1"]
    rows = list(csv.DictReader((out / "phantoms.csv").open()))
    assert [r["phase"] for r in rows] == ["noncontrast", "corticomedullary"]
    img = nib.load(str(out / "case_00061_c0" / "imaging.nii.gz"))
    assert min(io.spacing_of(img.affine)) >= 1.1          # the coarse grid, not 0.98 mm
    capsys.readouterr()
    assert cli.main(args) == 2                            # nothing is overwritten without asking
    assert "exists" in capsys.readouterr().err
    # the fixed split: the sample folder holds none of the split's cases
    assert cli.main(["phantom", "--from-labels", str(src), "--out", str(tmp_path / "s"),
                     "--split", "test"]) == 2
    assert "is missing" in capsys.readouterr().err
    assert cli.main(["phantom", "--out", str(tmp_path / "t"), "--grid", "coarse"]) == 2
