"""Writing phantoms in the KiTS23 folder layout."""
from __future__ import annotations

from pathlib import Path
from typing import List

from .. import io
from .synthetic import Phantom, make_phantom
from .tissues import PHASES


def write_case(ph: Phantom, case_dir, *, overwrite: bool = False) -> Path:
    """Write ``case_dir/imaging.nii.gz`` (int16 HU) and ``segmentation.nii.gz`` (uint8), KiTS23
    layout and ``I, P, L`` affine. Existing files are kept unless ``overwrite``."""
    case_dir = Path(case_dir)
    for name in (io.IMAGE_NAME, io.LABEL_NAME):
        if (case_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{case_dir / name} exists; pass overwrite=True (--overwrite)")
    io.save_array(ph.image, ph.affine, case_dir / io.IMAGE_NAME, overwrite=overwrite)
    io.save_array(ph.labels, ph.affine, case_dir / io.LABEL_NAME, overwrite=overwrite)
    return case_dir


def write_dataset(out_dir, n: int, seed: int = 0, *, overwrite: bool = False, start: int = 0,
                  progress=None, **kwargs) -> List[Path]:
    """Write ``n`` phantoms as ``out_dir/case_{start+i:05d}``; case ``i`` uses seed
    ``seed * 100003 + i``. ``kwargs`` go to :func:`make_phantom` (``phase='cycle'``: case ``i`` gets ``PHASES[i % 3]``); ``progress(i, path)`` is called
    after each case."""
    out = []
    for i in range(int(n)):
        path = Path(out_dir) / f"case_{start + i:05d}"
        kw = dict(kwargs)
        if kw.get("phase") == "cycle":  # case i: non-contrast, corticomedullary, nephrographic, ...
            kw["phase"] = PHASES[i % len(PHASES)]
        ph = make_phantom(int(seed) * 100003 + i, **kw)
        out.append(write_case(ph, path, overwrite=overwrite))
        if progress is not None:
            progress(i, path)
    return out
