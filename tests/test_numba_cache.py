"""Where the Numba kernels are cached: a read-only install uses a user folder; the cold-cache check."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sparseconv.backends import numba_cache


def test_read_only_package_caches_in_a_user_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SPARSECONV_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba_cache, "_writable", lambda folder: False)
    numba = sys.modules.get("numba")
    before = numba.config.CACHE_DIR if numba else None
    try:
        numba_cache.configure()
        assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "xdg" / "sparseconv" / "numba")
        if numba:  # already imported: its config follows too
            assert numba.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
        assert numba_cache.cache_dir().parent == tmp_path / "xdg" / "sparseconv" / "numba"
    finally:
        if numba:
            numba.config.CACHE_DIR = before


def test_writable_package_or_a_user_setting_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba_cache, "_writable", lambda folder: True)
    numba_cache.configure()
    assert "NUMBA_CACHE_DIR" not in os.environ
    assert numba_cache.cache_dir() == numba_cache.KERNELS.parent / "__pycache__"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(numba_cache, "_writable", lambda folder: False)
    numba_cache.configure()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_cold_cache_is_detected_and_warms_up_where_numba_writes(tmp_path):
    """A fresh NUMBA_CACHE_DIR is cold; after one kernel has run, Numba's files are where
    ``cache_dir`` looks (the check and Numba agree on the folder)."""
    code = ("import numpy as np\n"
            "from sparseconv.backends import numba_cache\n"
            "assert numba_cache.is_cold()\n"
            "from sparseconv.backends.numba_cpu import backend\n"
            "backend.build_index(np.arange(5, dtype=np.int64))\n"
            "assert numba_cache.is_cold()  # the convolution kernels are not compiled yet\n"
            "from sparseconv.kmap import KernelMap\n"
            "kmap = KernelMap(np.zeros((1, 1), np.int32), 1, np.zeros((1, 3), np.int32), 'submanifold')\n"
            "backend.conv_forward(np.ones((1, 2), np.float32), np.ones((1, 2, 2), np.float32), kmap)\n"
            "assert not numba_cache.is_cold(), sorted(numba_cache.cache_dir().parent.rglob('*'))\n"
            "print(numba_cache.cache_dir())\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(tmp_path / "cache"))


@pytest.mark.parametrize("present", [(), ("numba_cpu",), ("numba_conv",), ("numba_cpu", "numba_conv")])
def test_is_cold_looks_for_this_pythons_index_files_of_both_modules(tmp_path, monkeypatch, present):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    folder = numba_cache.cache_dir()
    folder.mkdir(parents=True)
    for module in ("numba_cpu", "numba_conv"):  # another Python's: does not count
        (folder / f"{module}._build_index-51.py27.nbi").write_bytes(b"")
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    for module in present:
        (folder / f"{module}._kernel-51.{tag}.nbi").write_bytes(b"")
    assert numba_cache.is_cold() is (len(present) < 2)
