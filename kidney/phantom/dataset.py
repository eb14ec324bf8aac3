"""Writing phantoms in the KiTS23 folder layout."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List

from .. import io
from .synthetic import Phantom, make_phantom
from .appearance import case_phase


#: the optional third file of a phantom case: the tissue each voxel was painted with
TISSUE_NAME = "tissue.nii.gz"


def write_case(ph: Phantom, case_dir, *, overwrite: bool = False, tissue: bool = False) -> Path:
    """Write ``case_dir/imaging.nii.gz`` (int16 HU) and ``segmentation.nii.gz`` (uint8), KiTS23
    layout and ``I, P, L`` affine; with ``tissue``, also ``tissue.nii.gz`` (uint8 tissue ids,
    :func:`~kidney.phantom.tissues.tissue_name`). Existing files are kept unless ``overwrite``."""
    case_dir = Path(case_dir)
    names = (io.IMAGE_NAME, io.LABEL_NAME) + ((TISSUE_NAME,) if tissue else ())
    for name in names:
        if (case_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{case_dir / name} exists; pass overwrite=True (--overwrite)")
    io.save_array(ph.image, ph.affine, case_dir / io.IMAGE_NAME, overwrite=overwrite)
    io.save_array(ph.labels, ph.affine, case_dir / io.LABEL_NAME, overwrite=overwrite)
    if tissue:
        io.save_array(ph.tissue, ph.affine, case_dir / TISSUE_NAME, overwrite=overwrite)
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
