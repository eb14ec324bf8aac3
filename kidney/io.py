"""NIfTI in and out on the scan's own grid, orientation and resampling.

Internal convention
-------------------
Every array inside ``kidney`` is indexed ``(z, y, x)`` in the KiTS23 orientation
``INTERNAL_AXCODES = ('I', 'P', 'L')``: axis 0 runs toward the patient's feet (cranio-caudal, the
slice axis), axis 1 toward the back, axis 2 toward the patient's left. KiTS23 files are already
stored this way, so they load without any axis change; other files (e.g. ``R, A, S``) are
permuted/flipped with :mod:`nibabel.orientations`. ``arr[k]`` is then an axial slice in radiological
display (anterior up, patient's right on the image left) and spacing is ``(sz, sy, sx)`` in mm.

A :class:`Volume` remembers the file's affine, header and shape; :meth:`Volume.to_file` maps an
internal array back so that predictions are written on the exact input grid (same shape, same
affine). Resampling (:func:`resample`) is centre-aligned: voxel ``j`` of the new grid covers
``[j t, (j+1) t)`` mm from the same origin corner as the old grid, so the physical extent is kept to
within half a voxel; going back uses the original shape exactly.

Errors: a missing file raises :class:`FileNotFoundError`, an existing output
:class:`FileExistsError`; everything about the content (not a NIfTI, not 3D, non-finite voxels,
absurd spacing, grid mismatch, bad labels) raises :class:`NiftiError` (a ``ValueError``). Each
message names the file and the offending shape or value.
"""
from __future__ import annotations

import glob
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt_mod
from scipy import ndimage

INTERNAL_AXCODES: Tuple[str, str, str] = ("I", "P", "L")
MIN_SPACING_MM = 0.0  # exclusive
MAX_SPACING_MM = 20.0  # inclusive
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_NAME = "imaging.nii.gz"
LABEL_NAME = "segmentation.nii.gz"

__all__ = [
    "INTERNAL_AXCODES", "NiftiError", "Volume", "Case", "load_nifti", "from_image", "load_case", "save_nifti",
    "save_array", "temp_path", "stale_temp_files", "kits_affine", "spacing_of", "to_internal", "from_internal", "resample",
    "resampled_shape", "check_spacing", "check_same_grid",
]


class NiftiError(ValueError):
    """A NIfTI file (or an array meant for one) has unusable content."""


@dataclass(frozen=True)
class Volume:
    """A 3D scan or label map in the internal ``(z, y, x)`` = ``I, P, L`` orientation.

    Attributes:
        array: ``(Z, Y, X)`` internal array, C-contiguous — float32 HU for images, uint8 labels.
        spacing: ``(sz, sy, sx)`` voxel size in mm, internal axis order.
        affine: ``(4, 4)`` float64 affine of the *file* (voxel index -> RAS+ mm).
        file_shape: array shape as stored in the file.
        header: a copy of the file's NIfTI header (``None`` for arrays not read from a file).
        path: the file it came from, if any.
    """

    array: np.ndarray
    spacing: Tuple[float, float, float]
    affine: np.ndarray
    file_shape: Tuple[int, int, int]
    header: Optional[nib.Nifti1Header] = field(default=None, repr=False, compare=False)
    path: Optional[Path] = None

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Internal ``(Z, Y, X)`` shape."""
        return tuple(self.array.shape)

    @property
    def file_axcodes(self) -> Tuple[str, str, str]:
        return tuple(nib.aff2axcodes(self.affine))

    @property
    def internal_affine(self) -> np.ndarray:
        """``(4, 4)`` affine of the internal array (maps internal voxel index -> RAS+ mm)."""
        return _internal_affine(self.affine, self.file_shape)

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """Map an internal ``(Z, Y, X)`` array on this volume's grid back to file orientation."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise NiftiError(f"array of shape {array.shape} is not on the grid of "
                             f"{self.path or 'this volume'} (internal shape {self.shape})")
        return from_internal(array, self.affine)

    def like(self, array: np.ndarray) -> "Volume":
        """A volume on the same grid holding ``array`` (internal orientation, same shape)."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise NiftiError(f"array of shape {array.shape} does not match internal shape "
                             f"{self.shape} of {self.path or 'this volume'}")
        return Volume(array, self.spacing, self.affine, self.file_shape, self.header, self.path)


@dataclass(frozen=True)
class Case:
    """A KiTS23-layout case: ``case_dir/imaging.nii.gz`` and optionally ``segmentation.nii.gz``."""

    case_id: str
    image: Optional[Volume]
    label: Optional[Volume]


# --- orientation --------------------------------------------------------------------------------

def _transform_to_internal(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform (``(3, 2)``) from the file's axes to ``I, P, L``."""
    start = ornt_mod.io_orientation(affine)
    return ornt_mod.ornt_transform(start, ornt_mod.axcodes2ornt(INTERNAL_AXCODES))


def to_internal(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """File-order 3D array -> internal ``(z, y, x)`` = ``I, P, L`` array (a view where possible)."""
    return ornt_mod.apply_orientation(np.asarray(array), _transform_to_internal(affine))


def from_internal(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Internal ``I, P, L`` array -> the axis order and directions of a file with ``affine``."""
    back = ornt_mod.ornt_transform(ornt_mod.axcodes2ornt(INTERNAL_AXCODES),
                                   ornt_mod.io_orientation(affine))
    return ornt_mod.apply_orientation(np.asarray(array), back)


def _internal_affine(affine: np.ndarray, file_shape: Sequence[int]) -> np.ndarray:
    transform = _transform_to_internal(affine)
    return affine @ ornt_mod.inv_ornt_aff(transform, tuple(file_shape))


def spacing_of(affine: np.ndarray) -> Tuple[float, float, float]:
    """Voxel size in mm of each *file* axis: the norms of the affine's first three columns."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def _internal_spacing(affine: np.ndarray) -> Tuple[float, float, float]:
    file_spacing = spacing_of(affine)
    transform = _transform_to_internal(affine)
    out = [0.0, 0.0, 0.0]
    for axis, (new_axis, _) in enumerate(transform):
        out[int(new_axis)] = file_spacing[axis]
    return tuple(out)


def check_spacing(spacing: Sequence[float], where: str = "volume") -> Tuple[float, float, float]:
    """``spacing`` as 3 floats (mm); :class:`NiftiError` if any is not finite, <= 0 or > 20 mm."""
    values = tuple(float(s) for s in spacing)
    if len(values) != 3:
        raise NiftiError(f"{where}: spacing must have 3 values (mm), got {values}")
    for axis, s in enumerate(values):
        if not np.isfinite(s) or not MIN_SPACING_MM < s <= MAX_SPACING_MM:
            raise NiftiError(f"{where}: absurd voxel spacing {s!r} mm on axis {axis} (all "
                             f"spacings {values}); expected 0 < spacing <= {MAX_SPACING_MM} mm")
    return values


def kits_affine(spacing: Sequence[float]) -> np.ndarray:
    """The KiTS23 affine for an internal ``(z, y, x)`` array with ``spacing = (sz, sy, sx)`` mm.

    ``[[0, 0, -sx, 0], [0, -sy, 0, 0], [-sz, 0, 0, 0], [0, 0, 0, 1]]``: axcodes ``I, P, L``, zero
    translation, exactly as every KiTS23 training case.
    """
    sz, sy, sx = check_spacing(spacing, "kits_affine")
    return np.array([[0, 0, -sx, 0], [0, -sy, 0, 0], [-sz, 0, 0, 0], [0, 0, 0, 1]],
                    dtype=np.float64)


# --- reading ------------------------------------------------------------------------------------

def _has_nifti_suffix(path: Path) -> bool:
    return any(path.name.endswith(s) for s in NIFTI_SUFFIXES)


def _open(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"no such NIfTI file: {path}")
    if path.is_dir():
        raise NiftiError(f"{path} is a directory, not a NIfTI file")
    if not _has_nifti_suffix(path):
        raise NiftiError(f"{path} is not a NIfTI file (name must end in .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for garbage input
        raise NiftiError(f"{path} is not a readable NIfTI file: {exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{path} is not a NIfTI file (nibabel read it as {type(img).__name__})")
    if len(img.shape) != 3:
        raise NiftiError(f"{path} is not a 3D volume: shape {img.shape} "
                         f"({len(img.shape)} dimensions)")
    return img


def _read_array(img, path: Path, label: bool) -> np.ndarray:
    """The file-order voxel array, validated: uint8 labels, or finite (not yet float32) HU."""
    proxy = img.dataobj
    scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0
    try:  # stored type when unscaled (int16 CT stays int16 until the final float32 copy)
        data = img.get_fdata(dtype=np.float32) if scaled and not label else np.asarray(proxy)
    except Exception as exc:  # truncated gzip etc.
        raise NiftiError(f"{path}: cannot read voxel data: {exc}") from exc
    if label:
        return _as_label_array(data, path)
    _check_finite(data, path)
    return data


def _check_finite(data: np.ndarray, path) -> None:
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise NiftiError(f"{path}: {int(bad.sum())} non-finite voxels, first at index {first} "
                             f"(value {data[first]})")


def _as_label_array(data: np.ndarray, path) -> np.ndarray:
    if data.dtype == np.uint8:
        return data
    _check_finite(data, path)
    rounded = np.rint(data)
    bad = (rounded != data) | (rounded < 0) | (rounded > 255)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NiftiError(f"{path}: label map holds a non-integer or out-of-range value "
                         f"{data[first]} at index {first} (labels must be integers 0..255)")
    return rounded.astype(np.uint8)


def load_nifti(path, *, label: bool = False) -> Volume:
    """Read a 3D NIfTI (``.nii`` / ``.nii.gz``) into the internal orientation.

    Args:
        path: file path.
        label: read as a label map (uint8, integer values 0..255) instead of an image (float32).

    Returns:
        :class:`Volume` with a C-contiguous ``array`` ``(Z, Y, X)`` in ``I, P, L`` orientation,
        spacing ``(sz, sy, sx)`` mm, and the file's affine and header.
    """
    path = Path(path)
    return _volume(_open(path), path, label, str(path))


def from_image(img, *, label: bool = False) -> Volume:
    """A nibabel image in memory (``nib.load(...)``, ``nib.Nifti1Image(data, affine)``) as a
    :class:`Volume`, read and checked as :func:`load_nifti` reads a file."""
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise NiftiError(f"expected a nibabel image, got {type(img).__name__}")
    name = img.get_filename()
    where = name or "nibabel image"
    if len(img.shape) != 3:
        raise NiftiError(f"{where} is not a 3D volume: shape {img.shape} ({len(img.shape)} dimensions)")
    if img.affine is None:
        raise NiftiError(f"{where} has no affine: its voxel size and orientation are unknown")
    return _volume(img, Path(name) if name else None, label, where)


def _volume(img, path: Optional[Path], label: bool, where: str) -> Volume:
    affine = np.asarray(img.affine, dtype=np.float64)
    check_spacing(spacing_of(affine), where)  # before orientation: a 0 column is singular
    spacing = _internal_spacing(affine)
    data = _read_array(img, where, label)
    internal = np.ascontiguousarray(to_internal(data, affine),
                                    dtype=np.uint8 if label else np.float32)
    header = img.header.copy() if isinstance(img.header, nib.Nifti1Header) else None
    return Volume(internal, spacing, affine, tuple(img.shape), header, path)


def check_same_grid(a: Volume, b: Volume, atol_mm: float = 1e-3) -> None:
    """Raise :class:`NiftiError` unless ``a`` and ``b`` share file shape and affine."""
    if a.file_shape != b.file_shape:
        raise NiftiError(f"grid mismatch: {a.path} has shape {a.file_shape} but {b.path} has "
                         f"shape {b.file_shape}")
    if not np.allclose(a.affine, b.affine, atol=atol_mm, rtol=0):
        diff = float(np.abs(a.affine - b.affine).max())
        raise NiftiError(f"grid mismatch: affines of {a.path} and {b.path} differ by up to "
                         f"{diff:.4g} mm\n{a.affine}\nvs\n{b.affine}")


def load_case(case_dir, *, image: bool = True, label: Optional[bool] = None) -> Case:
    """Read a KiTS23 case folder ``case_XXXXX/{imaging,segmentation}.nii.gz``.

    Args:
        case_dir: the case folder.
        image: read ``imaging.nii.gz`` (required when true).
        label: ``True`` requires ``segmentation.nii.gz``, ``False`` skips it, ``None`` reads it if
            present. Labels must lie in ``{0, 1, 2, 3}``.

    Both volumes must share shape and affine (else :class:`NiftiError`).
    """
    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        raise FileNotFoundError(f"no such case folder: {case_dir}")
    img = load_nifti(case_dir / IMAGE_NAME) if image else None
    seg_path = case_dir / LABEL_NAME
    seg = None
    if label or (label is None and seg_path.exists()):
        seg = load_nifti(seg_path, label=True)
        _check_kits_labels(seg.array, seg_path)
    if img is not None and seg is not None:
        check_same_grid(img, seg)
    return Case(case_dir.name, img, seg)


def _check_kits_labels(array: np.ndarray, path) -> None:
    if array.size and int(array.max()) > 3:
        first = tuple(int(i) for i in np.argwhere(array > 3)[0])
        raise NiftiError(f"{path}: label {int(array[first])} at internal index {first} is not a "
                         f"KiTS23 label (0 background, 1 kidney, 2 tumour, 3 cyst)")


# --- writing ------------------------------------------------------------------------------------

def _check_output_path(path: Path, overwrite: bool) -> None:
    if not _has_nifti_suffix(path):
        raise NiftiError(f"output {path} must end in .nii or .nii.gz")
    if path.is_dir():
        raise NiftiError(f"output {path} is a directory")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")


def temp_path(path) -> Path:
    """A new, unique temporary name for ``path`` in its own folder (hidden: a leading dot, and
    ``.tmp`` before the NIfTI suffix, so no folder listing of ``*.nii.gz`` cases or ``case_*``
    predictions picks it up); :func:`stale_temp_files` finds them again."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"


def stale_temp_files(path) -> list:
    """Temporary files :func:`save_array` left beside ``path`` (a process killed mid-write)."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp{suffix}"))


def save_array(array: np.ndarray, affine: np.ndarray, path, *, header=None,
               overwrite: bool = False, dtype=None) -> Path:
    """Atomically write a *file-order* 3D array as NIfTI.

    The data go to a temporary file in the same folder (:func:`temp_path`), which is flushed to disk
    and renamed over ``path`` only once complete, so a failed or killed write never leaves a partial
    ``path``. The file gets the permissions a new file gets under the process's umask (0644 under the
    usual 022), as ``open()`` would give it. ``header`` (optional) supplies codes and metadata; its
    data type and scaling are replaced.

    Returns the written path. Raises :class:`FileExistsError` when ``path`` exists and
    ``overwrite`` is false, :class:`NiftiError` for a non-3D or non-finite array.
    """
    path = Path(path)
    _check_output_path(path, overwrite)
    array = np.asarray(array if dtype is None else np.asarray(array).astype(dtype, copy=False))
    if array.ndim != 3:
        raise NiftiError(f"cannot write {path}: array has shape {array.shape}, need 3D")
    _check_finite(array, f"array for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=hdr)
    img.set_data_dtype(array.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    for _ in range(100):
        tmp = temp_path(path)
        try:  # mode 0666 less the umask, as for any new file (mkstemp would force 0600)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        nib.save(img, str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data reach the disk before the name does
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_nifti(array: np.ndarray, like: Volume, path, *, overwrite: bool = False,
               dtype=np.uint8) -> Path:
    """Write an internal ``(Z, Y, X)`` array on the grid of ``like`` (its exact shape and affine).

    Args:
        array: internal-orientation array with ``array.shape == like.shape``.
        like: the volume whose grid the output must share (usually the input scan).
        path: ``.nii`` or ``.nii.gz`` output.
        overwrite: replace an existing file.
        dtype: stored type; uint8 for label maps (default).
    """
    return save_array(like.to_file(np.asarray(array).astype(dtype, copy=False)), like.affine,
                      path, header=like.header, overwrite=overwrite)


# --- resampling ---------------------------------------------------------------------------------

def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    new_spacing: Sequence[float]) -> Tuple[int, int, int]:
    """Shape covering the same extent at ``new_spacing``: ``max(1, round(n * s / t))`` per axis."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing))


def resample(array: np.ndarray, spacing: Sequence[float], new_spacing, *, order: int = 1,
             out_shape: Optional[Sequence[int]] = None, antialias: bool = False) -> np.ndarray:
    """Resample a ``(Z, Y, X)`` array from ``spacing`` to ``new_spacing`` (mm), centre-aligned.

    Output voxel ``j`` samples the input at ``(j + 0.5) t / s - 0.5`` (voxel units), so both grids
    share the corner of voxel 0 and cover the same extent to within half a new voxel. Edges are
    extended (``mode='nearest'``).

    Args:
        array: 3D array (images float, labels integer).
        spacing: ``(sz, sy, sx)`` mm of ``array``.
        new_spacing: a float (isotropic) or 3 values in mm.
        order: 1 = linear (images, probabilities), 0 = nearest (labels).
        out_shape: force the output shape (e.g. the original shape when going back); default
            :func:`resampled_shape`.
        antialias: before shrinking an image, smooth it with a Gaussian of σ = (t / s − 1) / 2
            input voxels along each axis whose new spacing ``t`` exceeds its spacing ``s``
            (scikit-image's ``resize(anti_aliasing=True)`` rule; edges extended). Without it a
            linear sample at a coarser grid reads one neighbourhood of input voxels: the noise and
            the fine detail of the input's own grid pass on unreduced and alias. Images only.

    Returns:
        The resampled array; float32 for ``order >= 1`` with float input, input dtype for
        ``order = 0``.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise NiftiError(f"resample needs a 3D array, got shape {array.shape}")
    if antialias and order < 1:
        raise ValueError("resample: antialias is for images (order >= 1), not labels")
    spacing = check_spacing(spacing, "resample input")
    if np.isscalar(new_spacing):
        new_spacing = (float(new_spacing),) * 3
    new_spacing = check_spacing(new_spacing, "resample target")
    if out_shape is None:
        out_shape = resampled_shape(array.shape, spacing, new_spacing)
    out_shape = tuple(int(n) for n in out_shape)
    scale = np.array(new_spacing) / np.array(spacing)
    offset = 0.5 * scale - 0.5
    if out_shape == array.shape and np.allclose(scale, 1.0):
        return array.copy()
    if order >= 1 and not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    if antialias:
        sigma = np.maximum(0.0, (scale - 1.0) / 2.0)
        if sigma.any():
            array = ndimage.gaussian_filter(array, sigma, mode="nearest")
    return ndimage.affine_transform(array, scale, offset=offset, output_shape=out_shape,
                                    order=order, mode="nearest", prefilter=False)
