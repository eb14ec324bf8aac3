"""kidney.io: orientation, exact-grid round trips, resampling, and every error kidney.io raises."""
from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from kidney import io


def _write(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _affine_for(axcodes, spacing, origin=(10.0, -20.0, 30.0)):
    """Affine whose voxel axes point along ``axcodes`` with the given per-axis spacing."""
    o = ornt.axcodes2ornt(axcodes)
    aff = np.eye(4)
    aff[:3, :3] = 0
    for axis, (world, flip) in enumerate(o):
        aff[int(world), axis] = flip * spacing[axis]
    aff[:3, 3] = origin
    return aff


# --- round trips on real files ------------------------------------------------------------------

def test_kits_ipl_roundtrip_keeps_shape_affine_and_data(kits_sample, tmp_path):
    src = kits_sample / "case_00061" / "segmentation.nii.gz"
    vol = io.load_nifti(src, label=True)
    assert vol.file_axcodes == ("I", "P", "L")
    assert vol.shape == vol.file_shape == (29, 512, 512)  # KiTS is already internal: no change
    assert vol.spacing == pytest.approx((5.0, 0.977, 0.977), abs=1e-3)
    out = io.save_nifti(vol.array, vol, tmp_path / "pred.nii.gz")
    back, orig = nib.load(str(out)), nib.load(str(src))
    assert back.shape == orig.shape
    assert np.array_equal(back.affine, orig.affine)
    assert back.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(orig.dataobj))
    assert int(back.header["sform_code"]) == int(orig.header["sform_code"])


def test_totalseg_ras_roundtrip_keeps_shape_and_affine(totalseg, tmp_path):
    ct = io.load_nifti(totalseg / "example_ct_sm.nii.gz")
    seg = io.load_nifti(totalseg / "example_seg.nii.gz", label=True)
    assert ct.file_axcodes == ("R", "A", "S") and ct.file_shape == (122, 101, 30)
    assert ct.shape == (30, 101, 122)  # (I, P, L): slices first
    assert tuple(nib.aff2axcodes(ct.internal_affine)) == io.INTERNAL_AXCODES
    assert ct.array.dtype == np.float32 and seg.array.dtype == np.uint8
    out = io.save_nifti(seg.array, ct, tmp_path / "seg_back.nii.gz")
    back = nib.load(str(out))
    assert back.shape == ct.file_shape
    assert np.array_equal(back.affine, ct.affine)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(nib.load(
        str(totalseg / "example_seg.nii.gz")).dataobj))


def test_load_case_reads_kits_layout(kits_sample):
    case = io.load_case(kits_sample / "case_00110", image=False)
    assert case.case_id == "case_00110"
    assert case.image is None and case.label is not None
    assert set(np.unique(case.label.array)) == {0, 1, 2, 3}


# --- generated files in many orientations -------------------------------------------------------

@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("I", "P", "L"),
                                     ("P", "I", "R"), ("A", "S", "L"), ("S", "R", "P")])
def test_any_orientation_maps_to_internal_and_back(tmp_path, axcodes):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 5, 6)).astype(np.float32)
    spacing = (0.8, 1.5, 3.0)
    aff = _affine_for(axcodes, spacing)
    vol = io.load_nifti(_write(tmp_path / "x.nii.gz", data, aff))
    assert tuple(nib.aff2axcodes(vol.internal_affine)) == io.INTERNAL_AXCODES
    # every internal voxel holds the file value at the same world position
    for idx in [(0, 0, 0), tuple(n - 1 for n in vol.shape), (1, 2, 3)]:
        world = vol.internal_affine @ np.r_[idx, 1.0]
        file_idx = np.rint(np.linalg.solve(aff, world)[:3]).astype(int)
        assert vol.array[idx] == data[tuple(file_idx)]
    # internal spacing is the file spacing of the axis that became (z, y, x)
    zooms = dict(zip(axcodes, spacing))
    pair = {"I": "S", "P": "A", "L": "R"}
    expected = tuple(zooms.get(c, zooms.get(pair[c])) for c in io.INTERNAL_AXCODES)
    assert vol.spacing == pytest.approx(expected)
    out = io.save_nifti(vol.array, vol, tmp_path / "y.nii.gz", dtype=np.float32)
    back = nib.load(str(out))
    assert back.shape == data.shape and np.allclose(back.affine, aff, atol=1e-5)
    assert np.array_equal(np.asarray(back.dataobj), data)


def test_to_file_rejects_wrong_grid(tmp_path):
    vol = io.load_nifti(_write(tmp_path / "x.nii", np.zeros((4, 5, 6), np.int16), np.eye(4)))
    with pytest.raises(io.NiftiError, match=r"\(3, 3, 3\)"):
        vol.to_file(np.zeros((3, 3, 3)))


def test_kits_affine_is_ipl():
    aff = io.kits_affine((5.0, 0.8, 0.8))
    assert nib.aff2axcodes(aff) == ("I", "P", "L")
    assert io.spacing_of(aff) == (5.0, 0.8, 0.8)


# --- resampling ---------------------------------------------------------------------------------

def _changed_near_boundary(orig, back, reach):
    """Every voxel that changed lies within ``reach`` voxels (per axis) of a label boundary."""
    from scipy import ndimage

    edge = np.zeros(orig.shape, bool)
    for axis in range(3):
        d = np.diff(orig, axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= d
        edge[tuple(hi)] |= d
    structure = np.ones([2 * r + 1 for r in reach], bool)
    near = ndimage.binary_dilation(edge, structure=structure)
    return bool(np.all(near[orig != back]))


@pytest.mark.parametrize("target", [1.99, 0.78])
def test_resample_there_and_back_keeps_extent_and_volumes(cropped_kits_labels, target):
    labels, spacing = cropped_kits_labels
    iso = io.resample(labels, spacing, target, order=0)
    extent, iso_extent = np.multiply(labels.shape, spacing), np.multiply(iso.shape, target)
    assert np.all(np.abs(extent - iso_extent) <= target / 2 + 1e-9)
    voxel, iso_voxel = np.prod(spacing), target ** 3
    for lab in (1, 2, 3):
        v0, v1 = (labels == lab).sum() * voxel, (iso == lab).sum() * iso_voxel
        faces = sum(np.count_nonzero(np.diff(labels == lab, axis=a)) * voxel / spacing[a]
                    for a in range(3))  # surface area, mm^2
        assert abs(v1 - v0) <= faces * max(target, *spacing) / 2, (lab, v0, v1)
    back = io.resample(iso, (target,) * 3, spacing, order=0, out_shape=labels.shape)
    assert back.shape == labels.shape and back.dtype == labels.dtype
    reach = [int(np.ceil(target / s)) for s in spacing]
    assert _changed_near_boundary(labels, back, reach)
    assert np.mean(back == labels) > 0.99


def test_resample_linear_is_centre_aligned():
    z = (np.arange(20) + 0.5) * 3.0  # voxel centres, mm
    ramp = np.broadcast_to(z[:, None, None], (20, 4, 4)).astype(np.float32)
    out = io.resample(ramp, (3.0, 1.0, 1.0), (1.0, 1.0, 1.0), order=1)
    assert out.shape == (60, 4, 4) and out.dtype == np.float32
    centres = (np.arange(60) + 0.5) * 1.0
    inner = (centres > 1.5) & (centres < 58.5)  # edges are clamped ("nearest")
    assert np.allclose(out[inner, 0, 0], centres[inner], atol=1e-4)
    assert np.array_equal(io.resample(ramp, (3, 1, 1), (3, 1, 1)), ramp)


# --- errors -------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        io.load_nifti(tmp_path / "nope.nii.gz")
    with pytest.raises(FileNotFoundError, match="no_case"):
        io.load_case(tmp_path / "no_case")


def test_not_a_nifti(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"this is not a NIfTI header" * 20)
    with pytest.raises(io.NiftiError, match="bad.nii.gz"):
        io.load_nifti(bad)
    txt = tmp_path / "scan.txt"
    txt.write_text("hello")
    with pytest.raises(io.NiftiError, match=r"scan.txt.*\.nii"):
        io.load_nifti(txt)


def test_not_3d(tmp_path):
    path = _write(tmp_path / "four.nii.gz", np.zeros((4, 4, 4, 2), np.float32), np.eye(4))
    with pytest.raises(io.NiftiError, match=r"four.nii.gz.*\(4, 4, 4, 2\)"):
        io.load_nifti(path)


def test_non_finite_voxels(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    path = _write(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(io.NiftiError, match=r"nan.nii.gz: 1 non-finite"):
        io.load_nifti(path)


def test_label_values_checked(tmp_path):
    path = _write(tmp_path / "lab.nii.gz", np.full((3, 3, 3), 0.5, np.float32), np.eye(4))
    with pytest.raises(io.NiftiError, match="lab.nii.gz.*0.5"):
        io.load_nifti(path, label=True)
    case = tmp_path / "case_00001"
    case.mkdir()
    _write(case / "segmentation.nii.gz", np.full((3, 3, 3), 7, np.uint8), np.eye(4))
    with pytest.raises(io.NiftiError, match="label 7"):
        io.load_case(case, image=False)


def test_image_label_grid_mismatch(tmp_path):
    case = tmp_path / "case_00002"
    case.mkdir()
    _write(case / "imaging.nii.gz", np.zeros((4, 5, 6), np.int16), np.eye(4))
    _write(case / "segmentation.nii.gz", np.zeros((4, 5, 7), np.uint8), np.eye(4))
    with pytest.raises(io.NiftiError, match=r"grid mismatch.*\(4, 5, 6\).*\(4, 5, 7\)"):
        io.load_case(case)
    _write(case / "segmentation.nii.gz", np.zeros((4, 5, 6), np.uint8), np.diag([2, 1, 1, 1]))
    with pytest.raises(io.NiftiError, match="affines"):
        io.load_case(case)


@pytest.mark.parametrize("zoom", [25.0, 0.0])
def test_absurd_spacing(tmp_path, zoom):
    hdr = nib.Nifti1Header()  # via the sform: nibabel refuses a singular affine argument
    hdr.set_data_shape((3, 3, 3))
    hdr.set_sform(np.diag([1.0, 1.0, zoom, 1.0]), code=2)
    path = tmp_path / "sp.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), None, header=hdr), str(path))
    with pytest.raises(io.NiftiError, match=rf"sp.nii.gz.*absurd voxel spacing {zoom}"):
        io.load_nifti(path)
    with pytest.raises(io.NiftiError, match="absurd"):
        io.resample(np.zeros((3, 3, 3)), (1, 1, 1), (1, -1, 1))


def test_existing_output_not_overwritten(tmp_path):
    vol = io.load_nifti(_write(tmp_path / "in.nii.gz", np.zeros((3, 4, 5), np.int16), np.eye(4)))
    target = tmp_path / "out.nii.gz"
    io.save_nifti(np.ones(vol.shape), vol, target)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="out.nii.gz.*overwrite"):
        io.save_nifti(np.zeros(vol.shape), vol, target)
    assert target.read_bytes() == before
    io.save_nifti(np.full(vol.shape, 2), vol, target, overwrite=True)
    assert np.asarray(nib.load(str(target)).dataobj).max() == 2


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    vol = io.load_nifti(_write(tmp_path / "in.nii.gz", np.zeros((3, 4, 5), np.int16), np.eye(4)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def broken_save(img, filename):  # writes half a file, then fails
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(io.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_nifti(np.ones(vol.shape), vol, out_dir / "pred.nii.gz")
    assert os.listdir(out_dir) == []
    monkeypatch.undo()
    bad = np.full((3, 4, 5), np.nan, np.float32)
    with pytest.raises(io.NiftiError, match="non-finite"):
        io.save_array(bad, np.eye(4), out_dir / "nan.nii.gz")
    with pytest.raises(io.NiftiError, match=r"\(2, 2\)"):
        io.save_array(np.zeros((2, 2)), np.eye(4), out_dir / "flat.nii.gz")
    with pytest.raises(io.NiftiError, match="pred.png"):
        io.save_array(np.zeros((2, 2, 2)), np.eye(4), out_dir / "pred.png")
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_of_the_umask(tmp_path, umask):
    """A new file gets 0666 less the umask, as open() gives it (not the 0600 of a mkstemp file),
    also when it replaces an older file; no temporary file stays behind."""
    old = os.umask(umask)
    try:
        out = io.save_array(np.zeros((2, 3, 4), np.uint8), np.eye(4), tmp_path / "a.nii.gz")
        assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask
        os.chmod(out, 0o600)
        io.save_array(np.ones((2, 3, 4), np.uint8), np.eye(4), out, overwrite=True)
        assert os.stat(out).st_mode & 0o777 == 0o666 & ~umask
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ["a.nii.gz"] and io.stale_temp_files(out) == []


def test_stale_temp_files_are_found_by_name(tmp_path):
    out = tmp_path / "case_00001.nii.gz"
    left = io.temp_path(out)
    left.write_bytes(b"half")
    (tmp_path / ".case_00010.nii.gz.1-ab.tmp.nii.gz").write_bytes(b"other case")
    assert left.name.startswith(".case_00001.nii.gz.") and left.name.endswith(".tmp.nii.gz")
    assert io.stale_temp_files(out) == [left]
