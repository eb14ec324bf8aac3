"""kidney.pipeline and the segment/demo CLI: output grid, labels, no-kidney input, weights errors."""
from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from kidney import cli, io, metrics
from kidney.model import KidneyNet, WeightsError, save_weights
from kidney.pipeline import NoKidneyWarning, Segmenter, default_weights, find_inputs

# Tiny random networks on coarse grids: the plumbing, not the accuracy, is under test here.
S1, S2 = 8.0, 4.0


@pytest.fixture(scope="module")
def tiny_segmenter():
    return Segmenter((KidneyNet("tiny", seed=1), {"stage": 1, "spacing_mm": S1}),
                     (KidneyNet("tiny", seed=2), {"stage": 2, "spacing_mm": S2}))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    save_weights(KidneyNet("tiny", seed=1), d / "stage1_tiny.npz", {"stage": 1, "spacing_mm": S1})
    save_weights(KidneyNet("tiny", seed=2), d / "stage2_tiny.npz", {"stage": 2, "spacing_mm": S2})
    return d


def test_segment_returns_labels_on_the_input_grid(tiny_phantom, tiny_segmenter):
    res = tiny_segmenter.segment(tiny_phantom.image, tiny_phantom.spacing, details=True)
    assert res.labels.shape == tiny_phantom.image.shape and res.labels.dtype == np.uint8
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    assert res.rois and set(res.seconds) == {"stage1", "roi", "stage2", "merge"}
    assert all(v > 0 for v in res.peak_mb.values())
    # masses and tumour only inside kidney+masses: the label map is one of the nested HEC maps
    assert res.n_active["stage1"] > 0


def test_no_kidney_gives_background_and_a_warning(tiny_segmenter):
    air = np.full((12, 20, 20), -1000, np.int16)
    with pytest.warns(NoKidneyWarning, match="no kidney"):
        labels = tiny_segmenter.segment(air, (5.0, 4.0, 4.0))
    assert labels.shape == air.shape and not labels.any()


def _crop_and_mask(tiny_phantom):
    """A stage-2-like input: a phantom's HU array with an odd-sized box mask (odd shapes change
    which children each k2 s2 parent groups, so a flip is not a symmetry of the network)."""
    hu = tiny_phantom.image[12:27, 48:69, 20:39].astype(np.float32)  # around a kidney
    mask = np.zeros(hu.shape, bool)
    mask[2:13, 3:18, 1:17] = True
    return hu, mask


def test_mirroring_tta_is_the_mean_of_the_flipped_runs(tiny_phantom, tiny_segmenter):
    from kidney.pipeline import MIRROR_AXES
    from kidney.sparsify import STAGE2
    tta = Segmenter(tiny_segmenter.stage1.model, tiny_segmenter.stage2.model, tta=True)
    hu, mask = _crop_and_mask(tiny_phantom)
    got, n = tta.probabilities_on_grid(tiny_segmenter.stage2, hu, STAGE2, mask)
    assert len(MIRROR_AXES) == 8 and len(set(MIRROR_AXES)) == 8 and MIRROR_AXES[0] == ()
    want = np.zeros_like(got)
    for axes in MIRROR_AXES:
        p, n_plain = tiny_segmenter.probabilities_on_grid(tiny_segmenter.stage2, np.flip(hu, axes), STAGE2,
                                                         np.flip(mask, axes))
        want += np.flip(p, axes)
        assert n_plain == n > 0
    np.testing.assert_allclose(got, want / 8, rtol=1e-6, atol=1e-7)
    # zero off the active set, and a real average: differs from the unmirrored run
    active = (mask & (hu >= STAGE2.window[0]) & (hu <= STAGE2.window[1]))
    assert not got[~active].any() and (got[active] > 0).all()
    plain, _ = tiny_segmenter.probabilities_on_grid(tiny_segmenter.stage2, hu, STAGE2, mask)
    assert np.abs(plain - got).max() > 1e-4


def test_mirroring_tta_commutes_with_a_flip_of_the_input(tiny_phantom, tiny_segmenter):
    from kidney.sparsify import STAGE2
    tta = Segmenter(tiny_segmenter.stage1.model, tiny_segmenter.stage2.model, tta=True)
    hu, mask = _crop_and_mask(tiny_phantom)
    for seg, equivariant in ((tta, True), (tiny_segmenter, False)):
        p, _ = seg.probabilities_on_grid(seg.stage2, hu, STAGE2, mask)
        q, _ = seg.probabilities_on_grid(seg.stage2, hu[::-1, :, ::-1], STAGE2, mask[::-1, :, ::-1])
        assert np.allclose(q[::-1, :, ::-1], p, rtol=1e-5, atol=1e-6) == equivariant


def test_segment_with_tta_on_the_cli(tiny_phantom, tiny_weights, tmp_path):
    from kidney import phantom
    phantom.write_case(tiny_phantom, tmp_path / "data" / "case_00000")
    for flag in ([], ["--tta"]):
        assert cli.main(["segment", "-i", str(tmp_path / "data"), "-o", str(tmp_path / f"pred{len(flag)}"),
                         "--weights", str(tiny_weights), "--quiet"] + flag) == 0
    a, b = (io.load_nifti(tmp_path / f"pred{k}" / "case_00000.nii.gz").array for k in (0, 1))
    assert a.shape == b.shape == tiny_phantom.image.shape and set(np.unique(b)) <= {0, 1, 2, 3}


def test_segment_needs_spacing_for_arrays(tiny_segmenter):
    with pytest.raises(ValueError, match="spacing"):
        tiny_segmenter.segment(np.zeros((4, 4, 4)))


def _ras_image(tiny_phantom):
    """The phantom as a nibabel image stored R, A, S (KiTS files are I, P, L)."""
    ras = np.ascontiguousarray(tiny_phantom.image.transpose(2, 1, 0)[::-1, ::-1, ::-1])
    sz, sy, sx = tiny_phantom.spacing
    return nib.Nifti1Image(ras, np.diag([sx, sy, sz, 1.0]))


def test_segment_takes_a_nibabel_image_a_path_or_an_array(tiny_phantom, tiny_segmenter, tmp_path):
    from kidney.model import labels_from_hecs
    img = _ras_image(tiny_phantom)
    res = tiny_segmenter.segment(img, probabilities=True)
    # in the image's own voxel order: nib.Nifti1Image(labels, img.affine) is the prediction
    assert res.labels.shape == img.shape and res.labels.dtype == np.uint8 and res.rois
    assert res.probabilities.shape == img.shape + (3,) and res.probabilities.dtype == np.float32
    vol = io.from_image(img)
    assert vol.file_axcodes == ("R", "A", "S") and vol.shape == tiny_phantom.image.shape
    internal = tiny_segmenter.segment(vol.array, vol.spacing)  # an array with its spacing
    assert np.array_equal(res.labels, io.from_internal(internal, img.affine))
    assert np.array_equal(tiny_segmenter.segment(vol), internal)  # a Volume: its array's order
    p = res.probabilities >= 0.5  # the labels are the threshold rule on the probabilities
    assert np.array_equal(res.labels, labels_from_hecs(p[..., 0], p[..., 1], p[..., 2]))
    assert 0 <= res.probabilities.min() and res.probabilities.max() <= 1 and res.probabilities.any()
    path = tmp_path / "scan.nii.gz"
    nib.save(img, str(path))
    assert np.array_equal(tiny_segmenter.segment(path), res.labels)
    assert np.array_equal(tiny_segmenter.segment(str(path)), res.labels)
    with pytest.raises(ValueError, match="needs spacing=.*nibabel image"):
        tiny_segmenter.segment(np.asarray(img.dataobj))
    with pytest.raises(io.NiftiError, match="not a 3D volume"):
        tiny_segmenter.segment(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)))


def test_segment_on_cuda_runs_through_the_gpu_backend(tiny_phantom, tiny_weights, tmp_path, kidney_on_cupy_stand_in):
    """--device cuda end to end on the CuPy stand-in (NumPy arrays, the CUDA kernels compiled for the
    CPU emulation): the CLI selects the cupy backend, the networks run through its kernels, and the
    labels match the CPU run's."""
    from kidney import phantom
    phantom.write_case(tiny_phantom, tmp_path / "data" / "case_00000")
    src = tmp_path / "data" / "case_00000" / io.IMAGE_NAME
    assert cli.main(["segment", str(src), "-o", str(tmp_path / "cpu.nii.gz"), "--weights", str(tiny_weights),
                     "--quiet"]) == 0
    kidney_on_cupy_stand_in("segment", src, "-o", tmp_path / "gpu.nii.gz", "--weights", tiny_weights,
                            "--device", "cuda", "--quiet")
    cpu, gpu = (io.load_nifti(tmp_path / f"{k}.nii.gz", label=True).array for k in ("cpu", "gpu"))
    assert cpu.shape == gpu.shape and np.mean(cpu != gpu) < 1e-3


def test_cli_segment_file_keeps_shape_and_affine_of_a_ras_file(tiny_phantom, tiny_weights, tmp_path):
    # store the phantom as R, A, S (another orientation than KiTS's I, P, L)
    ipl = tiny_phantom.affine
    internal = tiny_phantom.image
    ras = np.ascontiguousarray(internal.transpose(2, 1, 0)[::-1, ::-1, ::-1])
    aff = np.diag([tiny_phantom.spacing[2], tiny_phantom.spacing[1], tiny_phantom.spacing[0], 1.0])
    src = tmp_path / "scan_0000.nii.gz"
    io.save_array(ras, aff, src)
    assert io.load_nifti(src).file_axcodes == ("R", "A", "S") and ipl is not None
    out = tmp_path / "pred.nii.gz"
    assert cli.main(["segment", str(src), "-o", str(out), "--weights", str(tiny_weights), "--quiet"]) == 0
    img, pred = nib.load(str(src)), nib.load(str(out))
    assert pred.shape == img.shape and np.allclose(pred.affine, img.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 3}


def test_cli_segment_folders_with_i_o(tiny_phantom, tiny_weights, tmp_path):
    from kidney import phantom
    phantom.write_case(tiny_phantom, tmp_path / "data" / "case_00003")
    assert find_inputs(tmp_path / "data") == [("case_00003", tmp_path / "data" / "case_00003" / io.IMAGE_NAME)]
    assert cli.main(["segment", "-i", str(tmp_path / "data"), "-o", str(tmp_path / "pred"),
                     "--weights", str(tiny_weights), "--quiet"]) == 0
    assert (tmp_path / "pred" / "case_00003.nii.gz").is_file()
    assert cli.main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "data")]) == 0


def test_cli_demo_smoke(tiny_weights, tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--preset", "tiny", "--weights",
                     str(tiny_weights)]) == 0
    text = capsys.readouterr().out
    for word in ("stage1", "stage2", "peak RSS", "Dice", "Surface Dice", "kidney", "tumor"):
        assert word in text
    assert (tmp_path / "demo" / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "demo" / "pred" / "case_00000.nii.gz").is_file()


@pytest.mark.parametrize("command", ["demo", "segment", "train", "phantom", "evaluate"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0 and "usage: kidney " + command in capsys.readouterr().out


def test_bad_weights_give_clear_errors(tiny_weights, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "stage1.npz").write_bytes(b"not a zip file")
    (bad / "stage2.npz").write_bytes((tiny_weights / "stage2_tiny.npz").read_bytes())
    with pytest.raises(WeightsError, match="stage1.npz is not a readable"):
        Segmenter(weights_dir=bad)
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "stage1.npz").write_bytes((tiny_weights / "stage2_tiny.npz").read_bytes())
    (swapped / "stage2.npz").write_bytes((tiny_weights / "stage2_tiny.npz").read_bytes())
    with pytest.raises(WeightsError, match="for stage 2, not stage 1"):
        Segmenter(weights_dir=swapped)
    capsys.readouterr()
    assert cli.main(["segment", str(tmp_path / "x.nii.gz"), "--weights", str(bad)]) == 2
    assert "stage1.npz is not a readable .npz" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="holds no stage1"):
        default_weights(tmp_path)


def test_shipped_weights_load_when_present():
    s1, s2 = default_weights()
    if not (s1.is_file() and s2.is_file()):
        pytest.skip(f"shipped weights {s1.name}, {s2.name} are not built yet (scripts/train_weights.sh)")
    seg = Segmenter()
    assert seg.stage1.model.config.name == seg.stage2.model.config.name == "compact"


def test_stage_errors_script_replays_the_pipeline(tiny_phantom, tiny_segmenter, tiny_weights, tmp_path, capsys,
                                                  load_script):
    from kidney import phantom
    from kidney.roi import find_rois
    se = load_script("stage_errors")
    img, sp = tiny_phantom.image.astype(np.float32), tiny_phantom.spacing
    prob1, _ = tiny_segmenter.stage1_probabilities(img, sp)
    extent = [n * s for n, s in zip(img.shape, sp)]
    rois = find_rois(prob1, S1, extent, S2, tiny_segmenter.roi_config)
    assert rois
    # its label maps are the pipeline's, so its Dice columns are what `kidney evaluate` reports
    assert np.array_equal(se.labels_on_rois(tiny_segmenter, img, sp, rois), tiny_segmenter.segment(img, sp))
    cov = se.coverage(img, tiny_phantom.labels, sp, rois)
    assert cov.shape == (2,) and 0.0 <= cov.min() and cov.max() <= 1.0
    # ROIs built from the truth itself (on the shipped weights' grids) cover all of it, within the
    # resampling of the masks; none cover nothing
    g1 = io.resampled_shape(img.shape, sp, (5.97,) * 3)
    truth1 = (io.resample(tiny_phantom.labels, sp, 5.97, order=0, out_shape=g1) > 0).astype(np.float32)
    gt_rois = find_rois(truth1, 5.97, extent, 1.56, tiny_segmenter.roi_config)
    assert np.all(se.coverage(img, tiny_phantom.labels, sp, gt_rois) >= 0.99)
    assert np.array_equal(se.coverage(img, tiny_phantom.labels, sp, []), [0.0, 0.0])
    data = tmp_path / "data"
    phantom.write_dataset(data, 1, seed=3, preset="tiny")
    assert se.main([str(data), "--weights", str(tiny_weights), "--lesions"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("case_00000") for line in out)
    assert any(line.startswith("mean") for line in out)
    # the printed lesion table counts every reference lesion of the data once, in some size bin
    case = io.load_case(data / "case_00000", label=True)
    n_lesions = len(metrics.lesion_recall(case.label.array, case.label.array, case.image.spacing))
    assert n_lesions > 0
    i = next(k for k, line in enumerate(out) if line.startswith("lesions"))
    assert out[i + 4].startswith(">= 50 ml")
    assert sum(int(line.split("|")[0].split()[-1]) for line in out[i + 1:i + 5]) == n_lesions
    # --lesions: one line per lesion after the table, shares in [0, 1]
    listed = [line.split() for line in out[i + 5:] if line.split()[1:2] in (["tumour"], ["cyst"])]
    assert len(listed) == n_lesions and all(0 <= float(x) <= 1 for row in listed for x in row[-2:])
    # --slab half: the same analysis on the scan cut through its kidneys (fov_check's slab)
    assert se.main([str(data), "--weights", str(tiny_weights), "--slab", "half"]) == 0
    half = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("case_00000") for line in half) and half != out
    rows = metrics.lesion_table([metrics.Lesion(2, v, r) for v, r in ((1.0, 0.0), (5.0, 0.6), (80.0, 1.0))])
    assert [(n, f) for _, n, f, _ in rows] == [(1, 0), (1, 1), (0, 0), (1, 1)]


def test_fov_check_script_cuts_slabs_with_and_without_kidney(tiny_weights, tmp_path, capsys, load_script):
    from kidney import phantom
    from kidney.slabs import fov_slabs
    fc = load_script("fov_check")
    labels = np.zeros((60, 4, 4), np.uint8)
    labels[30:40, 1, 1] = 1
    s = fov_slabs(labels, (2.0, 1.0, 1.0))
    assert s["no-kidney"] == slice(0, 30) and not labels[s["no-kidney"]].any()
    assert s["half"] == slice(0, 35) and s["tight"] == slice(22, 48)
    assert "no-kidney" not in fov_slabs(labels, (1.0, 1.0, 1.0))       # 30 mm < 40 mm: no such slab
    assert fov_slabs(np.zeros((5, 2, 2), np.uint8), (1, 1, 1)) == {}
    data = tmp_path / "data"
    phantom.write_dataset(data, 1, seed=3, preset="tiny")
    assert fc.main([str(data), "--weights", str(tiny_weights)]) == 0
    out = capsys.readouterr().out
    assert "slab kind" in out and "tight" in out
    slabs = re.findall(r" (\d+) ROI\(s\)(?: \(stage-1 components of ([\d. ]+) ml\))?", out)
    assert len(slabs) >= 2 and any(int(n) for n, _ in slabs)
    for n, sizes in slabs:
        assert len(sizes.split()) == int(n) and all(float(v) > 0 for v in sizes.split())  # one volume per ROI
    # a slab without kidney reports what was labelled there all the same, and the sum of those
    false = [float(v) for v in re.findall(r"no-kidney .*labelled ([\d.]+) ml", out)]
    assert false and len(false) == sum(" no-kidney " in line for line in out.splitlines())  # this scan has one
    total = re.search(r"slabs without kidney: (\d+) of (\d+), ([\d.]+) ml in all", out)
    assert int(total[2]) == len(false) and abs(float(total[3]) - sum(false)) < 0.05 * len(false) + 1e-9
    # --json: the same sums per slab kind
    assert fc.main([str(data), "--weights", str(tiny_weights), "--json", str(tmp_path / "fov.json")]) == 0
    sums = json.loads((tmp_path / "fov.json").read_text())
    rows = re.findall(r"^(\S+) +(\d+) +(\d+)  ", capsys.readouterr().out, re.M)
    table = {k: (int(n), int(r)) for k, n, r in rows}
    assert {k: (v["slabs"], v["with_roi"]) for k, v in sums.items()} == table and "no-kidney" in sums
    assert sums["no-kidney"]["dice"] is None and sums["no-kidney"]["labelled_ml"] == pytest.approx(sum(false), abs=0.1)


def test_shipped_weight_sets_by_name(tmp_path, monkeypatch):
    from kidney.pipeline import WEIGHT_SETS, WeightsError
    s1, s2 = default_weights("varied")   # its stage 1 is an ensemble of two networks, in name order
    assert [f.name for f in s1] == ["stage1_compact.npz", "stage1_compact_stem_bias.npz"]
    assert {f.parent for f in s1} == {s2.parent} == {WEIGHT_SETS["varied"]} and s2.name.startswith("stage2")
    assert default_weights("phantoms") == (WEIGHT_SETS["phantoms"] / "stage1_compact.npz",
                                           WEIGHT_SETS["phantoms"] / "stage2_compact.npz")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "varied").mkdir()                       # a folder of that name wins over the set
    with pytest.raises(WeightsError, match="holds no stage1"):
        default_weights("varied")
    with pytest.raises(WeightsError, match="does not exist"):
        default_weights("no_such_set")


def test_lesion_contrast_script_measures_a_lesion_against_its_kidney(tmp_path, capsys, load_script):
    from kidney import phantom
    lc = load_script("lesion_contrast")
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[4:36, 4:36, 4:36] = 1
    labels[15:25, 15:25, 15:25] = 2                                   # a 1 ml tumour in the kidney's core
    image = rng.normal(100.0, 10.0, labels.shape)
    image[labels == 2] -= 20.0                                        # 2 SD darker than its kidney
    les, = lc.lesions_of(image, labels, (1.0, 1.0, 1.0), 0.5)
    assert les.kind == "tumour" and les.ml == pytest.approx(1.0)
    assert les.hu == pytest.approx(80.0, abs=1.0) and les.kidney_hu == pytest.approx(100.0, abs=1.0)
    assert les.contrast == pytest.approx(-2.0, abs=0.25)
    assert les.outside == 0.0 and lc.position(les.outside) == "inside"
    assert list(lc.lesions_of(image, labels, (1.0, 1.0, 1.0), 2.0)) == []  # under --min-ml
    # a cyst reaching 4 of its 10 voxels out of the kidney's face at x = 36: of its 6-connected rim
    # (600 voxels), the far face (100) and 4/10 of the four sides (160) are background
    wide = np.zeros((40, 40, 48), np.uint8)
    wide[4:36, 4:36, 4:36] = 1
    wide[15:25, 15:25, 30:40] = 3
    cyst, = lc.lesions_of(rng.normal(100.0, 10.0, wide.shape), wide, (1.0, 1.0, 1.0), 0.5)
    assert cyst.kind == "cyst" and cyst.outside == pytest.approx(260 / 600)
    assert lc.position(cyst.outside) == "partly out" and lc.position(0.7) == "exophytic"
    data = tmp_path / "data"
    phantom.write_dataset(data, 1, seed=3, preset="tiny", phase="nephrographic")
    assert lc.main([str(data)]) == 0
    out = capsys.readouterr().out
    assert "case_00000" in out and out.strip().splitlines()[-1].startswith("nephrographic")
    # --pred: where each lesion went, and the shares summed by visibility
    from kidney import io
    case = data / "case_00000"
    (case / "imaging.nii.gz").unlink()
    (case / "segmentation.nii.gz").unlink()
    affine = io.kits_affine((1.0, 1.0, 1.0))
    io.save_array(image.astype(np.float32), affine, case / "imaging.nii.gz", dtype=np.float32)
    io.save_array(labels, affine, case / "segmentation.nii.gz")
    like = io.load_nifti(case / "imaging.nii.gz")
    pred = labels.copy()
    pred[15:25, 15:25, 15:19] = 1                                     # 0.4 of the tumour called kidney
    pred[15:25, 15:25, 19:20] = 0                                     # 0.1 background, 0.5 still a mass
    (tmp_path / "pred").mkdir()
    io.save_nifti(pred, like, tmp_path / "pred" / "case_00000.nii.gz")
    assert lc.main([str(data), "--pred", str(tmp_path / "pred")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1].split()[-3:] == ["0.50", "0.40", "0.10"]            # the lesion's row
    assert out[-1].split() == ["tumour", ">=", "2", "1", "0.50", "0.40", "0.10"]  # |contrast| 2.0
    assert ["tumour", "inside", "1", "0.50", "0.40", "0.10"] in [line.split() for line in out]
    assert lc.visibility_band(-0.99) == "< 1" and lc.visibility_band(1.5) == "1 to 2"


def test_lesion_positions_script_counts_lesions_inside_and_out(tmp_path, capsys, load_script):
    lp = load_script("lesion_positions")
    labels = np.zeros((40, 40, 48), np.int16)
    labels[4:36, 4:36, 4:36] = 1
    labels[15:25, 15:25, 15:25] = 2                                   # inside: no background on its rim
    labels[15:25, 15:25, 30:40] = 3                                   # reaching out: 260 of its 600 rim voxels
    labels[30:31, 30:31, 30:31] = 2                                   # under --min-ml
    rows = lp.lesion_positions(labels, (1.0, 1.0, 1.0), 0.5)
    assert [(k, ml) for k, ml, _ in rows] == [("tumour", 1.0), ("cyst", 1.0)]
    assert rows[0][2] == 0.0 and rows[1][2] == pytest.approx(260 / 600)
    from kidney import io
    case = tmp_path / "maps" / "case_00000"
    case.mkdir(parents=True)
    io.save_array(labels.astype(np.uint8), io.kits_affine((1.0, 1.0, 1.0)), case / io.LABEL_NAME)
    assert lp.main(["--maps", str(tmp_path / "maps")]) == 0
    out = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert out[2][:5] == ["tumour", "1", "0.00", "0.00-0.00", "1"]   # inside: 1 lesion, all of the volume
    assert out[3][:3] == ["cyst", "1", "0.43"] and out[3][4:7] == ["0", "(0.00)", "1"]  # partly out
    with pytest.raises(SystemExit):
        lp.main(["--maps", str(tmp_path / "maps"), "--split", "test"])  # case_00000 is in no test split


def test_threshold_sweep_scores_as_the_segmenter_labels(load_script):
    """The sweep's Dice at every threshold equals kidney.metrics' Dice of the labels the segmenter's
    rule makes from the same probabilities, with reference voxels outside the scored box counted."""
    from kidney import metrics
    from kidney.model import labels_from_hecs
    ts = load_script("threshold_sweep")
    rng = np.random.default_rng(1)
    probs = np.zeros((12, 14, 16, 3), np.float32)
    probs[2:10, 3:12, 4:14] = rng.random((8, 9, 10, 3))
    ref = rng.integers(0, 4, size=(12, 14, 16)).astype(np.uint8)   # some of it outside the box
    swept = ts.sweep_case(probs, ref)
    assert len(swept) == len(ts.KIDNEY) * len(ts.LESION) ** 2
    for key in [(0.5, 0.5, 0.5), (0.3, 0.9, 0.4), (0.7, 0.3, 0.8)]:
        tk, tm, tt = key
        labels = labels_from_hecs(probs[..., 0] >= tk, probs[..., 1] >= tm, probs[..., 2] >= tt)
        np.testing.assert_allclose(swept[key], metrics.hec_dice(labels, ref), rtol=1e-12)
