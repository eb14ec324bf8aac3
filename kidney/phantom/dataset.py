"""Writing phantoms in the KiTS23 folder layout."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional

from .. import io
from .synthetic import Phantom, make_phantom
from .appearance import case_phase


#: the optional third file of a phantom case: the tissue each voxel was painted with
TISSUE_NAME = "tissue.nii.gz"


def write_case(ph: Phantom, case_dir, *, overwrite: bool = False, tissue: bool = False,
               like: Optional[io.Volume] = None) -> Path:
    """Write ``case_dir/imaging.nii.gz`` (int16 HU) and ``segmentation.nii.gz`` (uint8), KiTS23
    layout and ``I, P, L`` affine; with ``tissue``, also ``tissue.nii.gz`` (uint8 tissue ids,
    :func:`~kidney.phantom.tissues.tissue_name`). With ``like``, on that volume's grid instead (its
    shape, affine and header: a phantom drawn on a label map's own grid). Existing files are kept
    unless ``overwrite``."""
    case_dir = Path(case_dir)
    files = [(io.IMAGE_NAME, ph.image, "int16"), (io.LABEL_NAME, ph.labels, "uint8")]
    files += [(TISSUE_NAME, ph.tissue, "uint8")] if tissue else []
    for name, _, _ in files:
        if (case_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{case_dir / name} exists; pass overwrite=True (--overwrite)")
    for name, array, dtype in files:
        if like is None:
            io.save_array(array, ph.affine, case_dir / name, overwrite=overwrite)
        else:
            io.save_nifti(array, like, case_dir / name, overwrite=overwrite, dtype=dtype)
    return case_dir


MANIFEST = "phantoms.csv"
MANIFEST_COLUMNS = ("case", "seed", "phase", "appearance", "spacing_mm", "source")


def append_manifest(out_dir, rows) -> Path:
    """Append rows (dicts with :data:`MANIFEST_COLUMNS`) to ``out_dir/phantoms.csv``, the record of
    how each case of a folder was made (its header is written when the file is new)."""
    path = Path(out_dir) / MANIFEST
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        if new:
            w.writeheader()
        w.writerows(rows)
    return path


def read_manifest(data_dir) -> Dict[str, dict]:
    """``{case: row}`` from ``data_dir/phantoms.csv`` (empty when the folder has none)."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return {}
    return {r["case"]: r for r in csv.DictReader(path.open())}


def manifest_row(case: str, ph: Phantom, source: str) -> dict:
    if ph.lesion_depth != "classic":  # the default leaves earlier rows as they were
        source = f"{source} lesion_depth={ph.lesion_depth}"
    return dict(case=case, seed=ph.seed, phase=ph.phase, appearance=ph.appearance,
                spacing_mm=" ".join(f"{s:g}" for s in ph.spacing), source=source)


def write_dataset(out_dir, n: int, seed: int = 0, *, overwrite: bool = False, start: int = 0,
                  progress=None, tissue: bool = False, **kwargs) -> List[Path]:
    """Write ``n`` phantoms as ``out_dir/case_{start+i:05d}``; case ``i`` uses seed
    ``seed * 100003 + i``. ``kwargs`` go to :func:`make_phantom` (``phase='cycle'``: case ``i`` gets ``PHASES[i % 3]``); ``progress(i, path)`` is called
    after each case. Each case gets a row in ``out_dir/phantoms.csv`` (:func:`append_manifest`);
    ``tissue`` also writes each case's tissue map (:func:`write_case`)."""
    out = []
    for i in range(int(n)):
        path = Path(out_dir) / f"case_{start + i:05d}"
        kw = dict(kwargs)
        if "phase" in kw:
            kw["phase"] = case_phase(kw["phase"], i)
        ph = make_phantom(int(seed) * 100003 + i, **kw)
        out.append(write_case(ph, path, overwrite=overwrite, tissue=tissue))
        append_manifest(out_dir, [manifest_row(path.name, ph, "make_phantom")])
        if progress is not None:
            progress(i, path)
    return out
