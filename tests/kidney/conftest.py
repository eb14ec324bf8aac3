"""Fixtures for the kidney tests: the real data shipped in ``data/`` and small phantoms."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# tests/kidney/conftest.py -> parents[2] is the repo root.
REPO = Path(__file__).resolve().parents[2]
REPO_DATA = REPO / "data"


@pytest.fixture
def load_script():
    """``load_script(name)``: ``scripts/<name>.py`` imported as a module (the scripts are no package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


# A `kidney` command on the CuPy stand-in (sparseconv's fake_cupy: NumPy arrays, the CUDA kernels
# compiled for the CPU emulation), in a process of its own so the stand-in never leaks into others;
# it also asserts that the command ran on the cupy backend.
_ON_CUPY_STAND_IN = ("import sys\n"
                     "from sparseconv.backends.cuda_emulation import fake_cupy\n"
                     "fake_cupy.install()\n"
                     "import sparseconv\n"
                     "from kidney import cli\n"
                     "rc = cli.main(sys.argv[1:])\n"
                     "assert sparseconv.get_backend().name == 'cupy', sparseconv.get_backend().name\n"
                     "sys.exit(rc)\n")


def _kidney_on_cupy_stand_in(*args, timeout=600):
    done = subprocess.run([sys.executable, "-c", _ON_CUPY_STAND_IN, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def kidney_on_cupy_stand_in():
    """``kidney_on_cupy_stand_in(*ARGS)`` runs ``kidney ARGS`` on the CuPy stand-in and asserts exit
    status 0 (its output in the message); skips without a C++ compiler for the CUDA emulation."""
    from sparseconv.backends.cuda_emulation import find_compiler
    if find_compiler() is None:
        pytest.skip("no C++ compiler for the CUDA emulation")
    return _kidney_on_cupy_stand_in


def _require(path: Path, what: str) -> Path:
    """``path`` if it exists; otherwise fail (not skip): the repository ships these files."""
    if not path.exists():
        pytest.fail(f"{path} is missing: {what} ships with the repository in data/ (see data/README.md); "
                    f"restore it from git (git checkout HEAD -- data/)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """The repository's ``data/`` folder (real KiTS23 label maps, the TotalSegmentator example CT)."""
    return _require(REPO_DATA, "the test data folder")


@pytest.fixture(scope="session")
def kits_sample(repo_data) -> Path:
    """``data/kits23_sample``: three real KiTS23 label maps, statistics, metric test vectors."""
    path = repo_data / "kits23_sample"
    for name in ("case_00061/segmentation.nii.gz", "case_00110/segmentation.nii.gz",
                 "case_00479/segmentation.nii.gz", "kits23_segmentation_stats.csv", "metric_testvectors.json"):
        _require(path / name, "the KiTS23 sample")
    return path


@pytest.fixture(scope="session")
def totalseg(repo_data) -> Path:
    """``data/totalseg_example``: the real CT and its TotalSegmentator labels (a test case only)."""
    path = repo_data / "totalseg_example"
    for name in ("example_ct_sm.nii.gz", "example_seg.nii.gz"):
        _require(path / name, "the TotalSegmentator example CT")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Two tiny phantoms in the KiTS23 layout (a training folder); tests leave it as they found it."""
    from kidney import phantom

    d = tmp_path_factory.mktemp("tiny_data")
    phantom.write_dataset(d, 2, seed=11, preset="tiny")
    return d


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


# --- cohorts (kidney segment on folders): tiny random networks and tiny phantom scans ---------------

def _take_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def takes_ctrl_c():
    """``preexec_fn`` for a child process a test sends SIGINT to. A non-interactive shell starts a
    background job (``pytest ... &``) with SIGINT ignored, Python keeps an ignored SIGINT ignored,
    and children inherit it: without this such a child would never see the test's Ctrl-C."""
    return _take_ctrl_c


@pytest.fixture(scope="session")
def cohort_weights(tmp_path_factory) -> Path:
    """A weights folder of two tiny random networks on coarse grids (8 / 4 mm): fast plumbing."""
    from kidney.model import KidneyNet, save_weights

    d = tmp_path_factory.mktemp("cohort_weights")
    save_weights(KidneyNet("tiny", seed=1), d / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    save_weights(KidneyNet("tiny", seed=2), d / "stage2_tiny.npz", {"stage": 2, "spacing_mm": 4.0})
    return d


@pytest.fixture(scope="session")
def cohort_scans(tmp_path_factory) -> Path:
    """Six tiny phantom CTs, nnU-Net style: ``c0_0000.nii.gz`` ... ``c5_0000.nii.gz``; copy them
    (the ``make_cohort`` fixture) before writing anything beside them."""
    from kidney import io, phantom

    d = tmp_path_factory.mktemp("cohort_scans")
    for i in range(6):
        ph = phantom.make_phantom(100 + i, preset="tiny")
        io.save_array(ph.image, ph.affine, d / f"c{i}_0000.nii.gz")
    return d


@pytest.fixture
def make_cohort(cohort_scans):
    """``make_cohort(dest, n=6, corrupt=())``: ``dest`` holding copies of the first ``n`` cohort
    scans, and a garbage file ``<name>_0000.nii.gz`` for each name in ``corrupt``."""
    import shutil

    def make(dest: Path, n: int = 6, corrupt=()) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shutil.copy2(cohort_scans / f"c{i}_0000.nii.gz", dest / f"c{i}_0000.nii.gz")
        for name in corrupt:
            (dest / f"{name}_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
        return dest

    return make
