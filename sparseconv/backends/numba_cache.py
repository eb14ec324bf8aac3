"""Where Numba keeps the compiled CPU kernels, and whether they are there yet.

The Numba backend (:mod:`sparseconv.backends.numba_cpu`) compiles its kernels with ``cache=True``:
the first run compiles them (about half a minute) and writes them to disk, later runs load them in
a fraction of a second. Numba's place for them is ``__pycache__`` next to ``numba_cpu.py``. When
the package folder is not writable (a system-wide or container install) and ``NUMBA_CACHE_DIR`` is
unset, :func:`configure` points ``NUMBA_CACHE_DIR`` at a user folder — ``$SPARSECONV_CACHE_DIR/numba``,
else ``$XDG_CACHE_HOME/sparseconv/numba``, else ``~/.cache/sparseconv/numba`` — so the kernels are
still compiled once, not on every run. ``numba_cpu`` calls it before it imports Numba.

This module does not import Numba.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

KERNELS = Path(__file__).resolve().parent / "numba_cpu.py"  # the module whose kernels are cached ...
KERNEL_MODULES = (KERNELS, KERNELS.parent / "numba_conv.py")  # ... with its convolution kernels


def user_cache_dir() -> Path:
    """The folder :func:`configure` uses when the package folder is read-only."""
    if os.environ.get("SPARSECONV_CACHE_DIR"):
        return Path(os.environ["SPARSECONV_CACHE_DIR"]) / "numba"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparseconv" / "numba"


def _writable(folder: Path) -> bool:
    while not folder.exists():  # Numba creates __pycache__ when its parent is writable
        folder = folder.parent
    return os.access(folder, os.W_OK)


def configure() -> None:
    """Set ``NUMBA_CACHE_DIR`` to :func:`user_cache_dir` if it is unset and the package folder is
    read-only; otherwise change nothing."""
    if os.environ.get("NUMBA_CACHE_DIR") or _writable(KERNELS.parent / "__pycache__"):
        return
    folder = str(user_cache_dir())
    os.environ["NUMBA_CACHE_DIR"] = folder
    if "numba" in sys.modules:  # imported before us: its config has read the environment already
        sys.modules["numba"].config.CACHE_DIR = folder


def cache_dir() -> Path:
    """Where Numba reads and writes the compiled kernels of ``numba_cpu.py`` and ``numba_conv.py``
    (one folder: both live in the same source folder)."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if not root:
        return KERNELS.parent / "__pycache__"
    # Numba's UserProvidedCacheLocator: <root>/<parent folder name>_<sha1 of the source's folder>
    folder = str(KERNELS.parent)
    return Path(root) / f"{KERNELS.parent.name}_{hashlib.sha1(folder.encode()).hexdigest()}"


def is_cold() -> bool:
    """True when a kernel module (``numba_cpu.py``, ``numba_conv.py``) has no compiled kernel cached
    for this Python: the next run compiles them. A cheap check (it looks for Numba's index files,
    ``*.nbi``), not a promise that every kernel is cached."""
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    try:
        folder = cache_dir()
        return not all(any(folder.glob(f"{module.stem}.*.{tag}.nbi")) for module in KERNEL_MODULES)
    except OSError:
        return True
