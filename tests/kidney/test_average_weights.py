"""scripts/average_weights.py: the mean of weight snapshots, checked entry by entry."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from kidney.model import KidneyNet, ModelConfig, read_weights, save_weights

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "average_weights.py"
TINY = ModelConfig("tiny", (4, 8, 8), (1, 1, 1), decoder_depth=1, n_supervised=2)


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def _snapshots(tmp_path, config=TINY, seeds=(1, 2, 3)):
    paths = []
    for s in seeds:
        p = tmp_path / f"w{s}.npz"
        save_weights(KidneyNet(config, seed=s), p, {"stage": 2, "spacing_mm": 1.56, "train": {"seed": s}})
        paths.append(p)
    return paths


def test_mean_of_snapshots_entry_by_entry(tmp_path):
    paths = _snapshots(tmp_path)
    out = tmp_path / "mean.npz"
    run = _run(*paths, "--out", out)
    assert run.returncode == 0, run.stderr
    mean, meta = read_weights(out)
    states = [read_weights(p)[0] for p in paths]
    assert mean.keys() == states[0].keys()
    for k, v in mean.items():
        expect = (sum(s[k].astype(np.float64) for s in states) / 3).astype(states[0][k].dtype)
        assert v.dtype == states[0][k].dtype and np.array_equal(v, expect), k
    assert meta["stage"] == 2 and meta["spacing_mm"] == 1.56 and meta["config"]["name"] == "tiny"
    assert [r.split()[0] for r in meta["averaged_from"]] == ["w1.npz", "w2.npz", "w3.npz"]
    # the same files in the same order: the same bits
    again = tmp_path / "again.npz"
    assert _run(*paths, "--out", again).returncode == 0
    for k, v in read_weights(again)[0].items():
        assert np.array_equal(v, mean[k])


def test_one_file_is_itself(tmp_path):
    (p,) = _snapshots(tmp_path, seeds=(5,))
    out = tmp_path / "one.npz"
    assert _run(p, "--out", out).returncode == 0
    a, b = read_weights(p)[0], read_weights(out)[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_refuses_other_configs_and_existing_output(tmp_path):
    paths = _snapshots(tmp_path, seeds=(1,))
    (tmp_path / "o").mkdir()
    biased = ModelConfig("tiny-b", (4, 8, 8), (1, 1, 1), decoder_depth=1, n_supervised=2, stem_bias=True)
    other = _snapshots(tmp_path / "o", biased, seeds=(2,))
    run = _run(paths[0], other[0], "--out", tmp_path / "x.npz")
    assert run.returncode == 2 and "differs" in run.stderr and not (tmp_path / "x.npz").exists()
    existing = tmp_path / "keep.npz"
    existing.write_bytes(b"mine")
    run = _run(paths[0], "--out", existing)
    assert run.returncode != 0 and "exists" in run.stderr and existing.read_bytes() == b"mine"
    run = _run(paths[0], "--out", paths[0], "--overwrite")
    assert run.returncode != 0 and "one of the inputs" in run.stderr
