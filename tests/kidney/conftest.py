"""Fixtures for the kidney tests: the shared real data (skipped when absent) and small phantoms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# tests/kidney/conftest.py -> parents[2] is the repo root; the shared data sit beside it.
REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real KiTS23 labels, TotalSegmentator CT); skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it holds the real KiTS23 "
                    f"label maps and the real CT these tests read)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kits_sample(shared_data) -> Path:
    path = shared_data / "kits23_sample"
    if not (path / "case_00061" / "segmentation.nii.gz").is_file():
        pytest.skip(f"{path} lacks the KiTS23 sample label maps")
    return path


@pytest.fixture(scope="session")
def totalseg(shared_data) -> Path:
    path = shared_data / "totalseg_example"
    if not (path / "example_ct_sm.nii.gz").is_file():
        pytest.skip(f"{path} lacks the TotalSegmentator example CT")
    return path


@pytest.fixture(scope="session")
def tiny_phantom():
    from kidney import phantom

    return phantom.make_phantom(3, preset="tiny")


@pytest.fixture(scope="session")
def cropped_kits_labels(kits_sample):
    """case_00479's label map (internal orientation) cropped to its foreground + 20 voxels."""
    from kidney import io

    vol = io.load_nifti(kits_sample / "case_00479" / "segmentation.nii.gz", label=True)
    idx = np.argwhere(vol.array > 0)
    lo = np.maximum(idx.min(axis=0) - 20, 0)
    hi = np.minimum(idx.max(axis=0) + 21, vol.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return np.ascontiguousarray(vol.array[box]), vol.spacing
