"""Training samples kept on disk and memory-mapped (``kidney train --sample-cache DIR``).

Making the samples is the slow start of a run: every scan is read, resampled and, in stage 2 with
stage-1 weights, passed through stage 1 to find its crops (about 0.6 s a scan on one thread).
Holding them is its memory: a scan's stage-2 crops (HU, labels, masks) are about 9 MB on the
``varied`` weights' grid, gigabytes for a training set (``benchmarks/bench_sample_cache.py``). A sample cache does both once. The first run writes each case's samples to
disk as it makes them (peak memory: one case); every run then maps the files read-only, so the
operating system pages the crops in as they are drawn, several runs (or MPI ranks) on one machine
share one copy, and a resumed run starts at once. The arrays are the same bytes, so a run on the
cache is bit for bit the run without it.

Layout of ``DIR``: ``hu.bin``, ``labels.bin``, ``mask.bin`` (every sample's array, C order, one
after the other, each starting on a 64-byte boundary) and ``samples.json`` (the key below and, per
sample, its case id and each array's offset, shape and dtype), written last.

The key is what the samples depend on: the stage's grids, the crop options, the stage-1 weights
(name and digest), the cases selected (``max_cases``, ``fold``) with each one's two files (path,
size, modification time), and the package version. A cache whose key differs from the run's is refused with the differences
named, never rebuilt over: choose another folder, or delete it yourself.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np

from . import io
from .model import weights_record
from .train import Sample, TrainConfig, iter_samples, split_cases

__all__ = ["cache_key", "write_cache", "read_cache", "cached_samples"]

FORMAT = 1
INDEX = "samples.json"
ARRAYS = ("hu", "labels", "mask")
ALIGN = 64  # bytes: every array starts on a boundary any dtype's view accepts


def _file_record(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(data_dir, cfg: TrainConfig) -> dict:
    """What the samples of ``data_dir`` under ``cfg`` depend on (JSON-ready)."""
    c = cfg.resolved()
    cases, _ = split_cases(data_dir, c)
    return {
        "format": FORMAT,
        "version": metadata.version("sparseconv"),
        "stage": c.stage, "spacing": c.spacing, "stage1_spacing": c.stage1_spacing,
        "gt_crops": c.gt_crops,
        "stage1_weights": weights_record(c.stage1_weights) if c.stage == 2 and c.stage1_weights else None,
        "cases": {d.name: [_file_record(d / io.IMAGE_NAME), _file_record(d / io.LABEL_NAME)] for d in cases},
        **({"antialias": True} if c.antialias else {}),  # absent when off: caches made before it still match
    }


def write_cache(samples: Iterable[Sample], cache_dir, key: dict) -> int:
    """Write ``samples`` (consumed one at a time) to ``cache_dir``, which must not exist yet.

    The files are written into a sibling folder and moved into place at the end, so ``cache_dir``
    exists only complete; where another process (an MPI rank on a shared disk) moved its own there
    first, this one's is dropped and the reader checks the key. Returns the number of samples."""
    cache_dir = Path(cache_dir)
    if cache_dir.exists():
        raise FileExistsError(f"sample cache {cache_dir} exists already")
    tmp = cache_dir.with_name(f"{cache_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a folder of this process's own earlier, failed attempt
    tmp.mkdir(parents=True)
    records = []
    try:
        files = {name: open(tmp / f"{name}.bin", "wb") for name in ARRAYS}
        try:
            for s in samples:
                rec = {"case_id": s.case_id}
                for name in ARRAYS:
                    a = getattr(s, name)
                    rec[name] = None if a is None else _append(files[name], a)
                records.append(rec)
        finally:
            for f in files.values():
                f.close()
        (tmp / INDEX).write_text(json.dumps({"key": key, "samples": records}))
        try:
            tmp.rename(cache_dir)
        except OSError:
            if not (cache_dir / INDEX).is_file():
                raise
            shutil.rmtree(tmp)  # another process (an MPI rank) finished the same cache first: keep its
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(records)


def _append(f, a: np.ndarray) -> list:
    """Write ``a`` at the next aligned offset of ``f``; ``[offset, shape, dtype]``."""
    pad = -f.tell() % ALIGN
    f.write(b"\0" * pad)
    offset = f.tell()
    f.write(np.ascontiguousarray(a).tobytes())
    return [offset, list(a.shape), a.dtype.str]


def read_cache(cache_dir, key: Optional[dict] = None) -> List[Sample]:
    """The samples of ``cache_dir``, their arrays read-only memory maps of its files.

    With ``key``, a cache made for anything else raises ``ValueError`` naming what differs."""
    cache_dir = Path(cache_dir)
    index_path = cache_dir / INDEX
    if not index_path.is_file():
        raise ValueError(f"{cache_dir} is not a sample cache (no {INDEX}); choose a new or empty folder")
    index = json.loads(index_path.read_text())
    if key is not None and index["key"] != key:
        raise ValueError(f"sample cache {cache_dir} was made for other samples ({_differences(index['key'], key)}); "
                         "choose another folder, or delete this one to make it again")
    maps = {name: _map(cache_dir / f"{name}.bin") for name in ARRAYS}
    return [Sample(r["case_id"], *(_view(maps[name], r[name]) for name in ARRAYS)) for r in index["samples"]]


def _map(path: Path) -> Optional[np.memmap]:
    return np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else None


def _view(buffer, rec) -> Optional[np.ndarray]:
    if rec is None:
        return None
    offset, shape, dtype = rec
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return buffer[offset:offset + n].view(dtype).reshape(shape)


def _differences(made: dict, wanted: dict) -> str:
    """``"spacing: 1.56 in the cache, 0.78 for this run; ..."`` (cases summarised by name)."""
    out = []
    for k in sorted(set(made) | set(wanted)):
        a, b = made.get(k), wanted.get(k)
        if a == b:
            continue
        if k == "cases":
            a, b = a or {}, b or {}
            changed = sorted(n for n in set(a) & set(b) if a[n] != b[n])
            parts = [f"{len(set(b) - set(a))} new", f"{len(set(a) - set(b))} not in this run",
                     f"{len(changed)} changed" + (f" (first: {changed[0]})" if changed else "")]
            out.append("cases: " + ", ".join(parts))
        else:
            out.append(f"{k}: {a!r} in the cache, {b!r} for this run")
    return "; ".join(out)


def cached_samples(data_dir, cfg: TrainConfig, cache_dir, progress: bool = False) -> List[Sample]:
    """The samples of ``data_dir`` under ``cfg``, from ``cache_dir``; written there first if it does
    not exist (each case's samples as they are made, never all of them in memory)."""
    key = cache_key(data_dir, cfg)
    cache_dir = Path(cache_dir)
    if cache_dir.is_dir() and not any(cache_dir.iterdir()):
        cache_dir.rmdir()  # an empty folder made for it: written in one piece below
    if not cache_dir.exists():
        n = write_cache(iter_samples(data_dir, cfg, progress), cache_dir, key)
        if progress:
            print(f"wrote {n} samples to the sample cache {cache_dir}", file=sys.stderr)
    samples = read_cache(cache_dir, key)
    if progress:
        print(f"mapped {len(samples)} samples from the sample cache {cache_dir}", file=sys.stderr)
    return samples
