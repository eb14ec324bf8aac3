"""kidney train --distributed: the split of a step's samples, the fixed-order gradient sum, resume
and failure under ``mpiexec -n 2`` (tiny model, tiny phantoms), and the in-process pieces."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from functools import reduce
from pathlib import Path

import numpy as np
import pytest

from kidney.distributed import SingleProcess, ordered_sum, share
from kidney.model import read_weights
from kidney.train import Trainer, TrainConfig, load_samples, loss_and_dice

REPO = Path(__file__).resolve().parents[2]
# The ranks keep this process's BLAS threading: OpenBLAS's results depend on its thread count, and the
# in-process references below must see the same BLAS as the ranks for their bits to agree.
ENV = {**os.environ, "NUMBA_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}


def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's, in the same environment
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
                               reason="mpi4py and mpiexec not installed (pip install sparseconv[mpi])")

# 4 steps of 3 micro-steps: 2 ranks take blocks of 2 and 1 (an uneven share)
ARGS = ["--stage", "1", "--model", "tiny", "--spacing", "8", "--steps", "4", "--accumulate", "3",
        "--lr", "1e-3", "--warmup", "1", "--seed", "5", "--checkpoint-every", "50"]


def _train(data, out, *extra, ranks=2, quiet=True, timeout=240):
    cmd = ([_mpiexec(), "-n", str(ranks)] if ranks else []) + [sys.executable, "-m", "kidney", "train",
                                                               "--data", str(data), "--out", str(out), *ARGS, *extra]
    cmd += ["--quiet"] if quiet else []
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def _log(out):
    return [json.loads(l) for l in (Path(out) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_rank_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("two_ranks")
    if importlib.util.find_spec("mpi4py") is None or _mpiexec() is None:
        pytest.skip("mpi4py and mpiexec not installed (pip install sparseconv[mpi])")
    proc, _ = _train(tiny_data, out, "--distributed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# --- in process -------------------------------------------------------------------------------------

def test_ordered_sum_adds_in_rank_order():
    one, big = np.float32(1.0), np.float32(1e8)
    # float32: (1 + 1e8) - 1e8 == 0 but (1e8 - 1e8) + 1 == 1, so the order shows in the bits
    assert ordered_sum([np.array([one]), np.array([big]), np.array([-big])])[0] == 0.0
    assert ordered_sum([np.array([big]), np.array([-big]), np.array([one])])[0] == 1.0
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(1000).astype(np.float32) * 10.0 ** rng.integers(-4, 5, 1000) for _ in range(5)]
    copies = [p.copy() for p in parts]
    total = ordered_sum(parts)
    assert total.tobytes() == reduce(lambda a, b: a + b, parts).tobytes()
    assert all(np.array_equal(p, c) for p, c in zip(parts, copies))  # the inputs are left alone


def test_share_splits_a_step_into_contiguous_blocks_in_rank_order():
    for accumulate in range(1, 10):
        for size in range(1, accumulate + 1):
            blocks = [share(accumulate, r, size) for r in range(size)]
            assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(accumulate))
            sizes = [hi - lo for lo, hi in blocks]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert share(3, 0, 2) == (0, 2) and share(3, 1, 2) == (2, 3)
    with pytest.raises(ValueError, match="--accumulate 2 is less than the 3 ranks"):
        share(2, 0, 3)


def test_one_rank_communicator_trains_bit_for_bit_like_one_process(tiny_data, tmp_path):
    # ds_weights (1, 0): the coarse head gets no gradient; it must stay untouched (None, not zeros)
    cfg = TrainConfig(stage=1, model="tiny", spacing=8.0, steps=2, accumulate=3, lr=1e-3, warmup_steps=1,
                      seed=5, ds_weights=(1.0, 0.0))
    samples = load_samples(tiny_data, cfg)
    plain = Trainer(cfg, samples, tmp_path / "plain", progress=False).run()
    comm = SingleProcess()
    dist = Trainer(cfg, samples, tmp_path / "dist", progress=False, comm=comm).run()
    a, b = plain.model.state_dict(), dist.model.state_dict()
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)
    untouched = [k for k in a if k.startswith("heads.1.")]
    init = Trainer(cfg, samples, tmp_path / "init", progress=False).model.state_dict()
    assert untouched and all(np.array_equal(a[k], init[k]) for k in untouched)
    assert [r["loss"] for r in plain.history] == [r["loss"] for r in dist.history]
    assert dist.history[-1]["micro_step"] == 6 and comm.reduce_seconds > 0
    assert "allreduce_seconds" in dist.history[0] and "allreduce_seconds" not in plain.history[0]


class _Recording(SingleProcess):
    """One rank that notes the deadline each collective call would wait under."""

    def __init__(self, timeout):
        self.timeout, self.seen = timeout, []

    def broadcast(self, obj):
        self.seen.append(("broadcast", self.timeout))
        return obj

    def gather(self, obj):
        self.seen.append(("gather", self.timeout))
        return [obj]

    def allreduce_sum_(self, arrays):
        self.seen.append(("allreduce", self.timeout))
        super().allreduce_sum_(arrays)


def test_start_up_waits_longer_than_the_steps(tiny_data, tmp_path):
    from kidney.distributed import STARTUP_TIMEOUT
    from kidney.train import train
    comm = _Recording(timeout=4.0)
    cfg = TrainConfig(stage=1, model="tiny", spacing=8.0, steps=2, accumulate=1, warmup_steps=1, seed=5)
    train(tiny_data, tmp_path, cfg, progress=False, comm=comm)
    start, steps = comm.seen[:3], comm.seen[3:]
    assert [c for c, _ in start] == ["broadcast", "gather", "broadcast"]  # resume?, digests, verdict
    assert all(t == STARTUP_TIMEOUT >= 600 for _, t in start)
    assert [c for c, _ in steps] == ["allreduce", "gather"] * 2 and all(t == 4.0 for _, t in steps)
    assert comm.timeout == 4.0


def test_distributed_options_need_distributed_and_cuda_is_refused(tiny_data, tmp_path, capsys):
    from kidney.cli import main
    assert main(["train", "--data", str(tiny_data), "--stage", "1", "--collective-timeout", "5"]) == 2
    assert "--collective-timeout goes with --distributed" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_data), "--stage", "1", "--distributed", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("kidney train: error: --distributed --device cuda: training on several processes "
                          "runs on the CPU only")


def test_one_process_never_imports_mpi4py(tiny_data, tmp_path):
    code = ("import sys; from kidney.cli import main; "
            f"rc = main(['train', '--data', {str(tiny_data)!r}, '--out', {str(tmp_path)!r}, '--stage', '1', "
            "'--model', 'tiny', '--spacing', '8', '--steps', '1', '--accumulate', '1', '--quiet']); "
            "assert rc == 0 and 'mpi4py' not in sys.modules, sorted(m for m in sys.modules if 'mpi' in m)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- under mpiexec ----------------------------------------------------------------------------------

def _blockwise(cfg, samples, out, blocks, add):
    """One process: per step, each block of micro-steps accumulated on its own, the blocks' gradients
    then combined by ``add(list of per-block gradients)``. Returns the trainer and step 1's losses."""
    ref = Trainer(cfg, samples, out, progress=False)
    params = ref.opt._params()
    first_losses = []
    for step in range(cfg.steps):
        parts = []
        for lo, hi in blocks:
            for p in params:
                p.grad = None
            for m in range(cfg.accumulate * step + lo, cfg.accumulate * step + hi):
                _, x, t = ref.draw(m)
                loss, _ = loss_and_dice(ref.model, x, t, cfg.ds_weights, cfg.loss)
                ref.acc.backward(loss)
                if step == 0:
                    first_losses.append(float(loss.item()))
            parts.append([p.grad for p in params])
        for i, p in enumerate(params):
            p.grad = add([part[i] for part in parts])
        ref.opt.step()
        ref.opt.zero_grad()
        ref.sched.step()
    return ref, first_losses


def _same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


@needs_mpi
def test_two_ranks_equal_one_process_accumulating_the_same_two_blocks(tiny_data, two_rank_run, tmp_path):
    cfg = TrainConfig(**json.loads((two_rank_run / "train_config.json").read_text()))
    assert (cfg.steps, cfg.accumulate) == (4, 3)
    samples = load_samples(tiny_data, cfg)
    # rank 0 takes micro-steps 0, 1 of each step, rank 1 micro-step 2; their sums are added
    ref, first_losses = _blockwise(cfg, samples, tmp_path / "ref", [(0, 2), (2, 3)], lambda g: g[0] + g[1])
    state, meta = read_weights(two_rank_run / "weights.npz")
    assert _same_bits(state, ref.model.state_dict())
    assert meta["ranks"] == 2 and meta["optimizer_steps"] == 4 and meta["micro_steps"] == 12
    log = _log(two_rank_run)
    assert [r["micro_step"] for r in log] == [3, 6, 9, 12]
    assert log[0]["loss"] == float(np.mean(first_losses))  # the same samples, in the same order
    assert all(r["allreduce_seconds"] >= 0 for r in log)
    # one process without blocks: the same training, rounded differently
    plain = Trainer(cfg, samples, tmp_path / "plain", progress=False).run().model.state_dict()
    assert all(np.allclose(plain[k], state[k], rtol=1e-4, atol=1e-6) for k in plain)


@needs_mpi
def test_three_ranks_add_their_gradients_in_rank_order(tiny_data, tmp_path):
    out = tmp_path / "three"
    proc, _ = _train(tiny_data, out, "--distributed", ranks=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = TrainConfig(**json.loads((out / "train_config.json").read_text()))
    samples = load_samples(tiny_data, cfg)
    blocks = [(0, 1), (1, 2), (2, 3)]
    state, meta = read_weights(out / "weights.npz")
    ranked, _ = _blockwise(cfg, samples, tmp_path / "a", blocks, lambda g: (g[0] + g[1]) + g[2])
    assert meta["ranks"] == 3 and _same_bits(state, ranked.model.state_dict())
    # the order shows in the bits here: summed the other way round, the weights differ
    other, _ = _blockwise(cfg, samples, tmp_path / "b", blocks, lambda g: (g[2] + g[1]) + g[0])
    assert not _same_bits(state, other.model.state_dict())


@needs_mpi
def test_resume_under_two_ranks_gives_the_bits_of_an_uninterrupted_run(tiny_data, two_rank_run, tmp_path):
    out = tmp_path / "resumed"
    proc, _ = _train(tiny_data, out, "--distributed", "--stop-at", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in _log(out)] == [1, 2]
    proc, _ = _train(tiny_data, out, "--distributed", quiet=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "at step 2 on 2 rank(s)" in proc.stderr
    assert _same_bits(read_weights(two_rank_run / "weights.npz")[0], read_weights(out / "weights.npz")[0])
    drop = ("seconds", "allreduce_seconds")
    strip = lambda log: [{k: v for k, v in r.items() if k not in drop} for r in log]  # noqa: E731
    assert strip(_log(out)) == strip(_log(two_rank_run))


@needs_mpi
def test_one_rank_under_mpi_gives_the_single_process_bits(tiny_data, tmp_path):
    proc, _ = _train(tiny_data, tmp_path / "mpi1", "--distributed", ranks=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = TrainConfig(**json.loads((tmp_path / "mpi1" / "train_config.json").read_text()))
    plain = Trainer(cfg, load_samples(tiny_data, cfg), tmp_path / "plain", progress=False).run()
    state, meta = read_weights(tmp_path / "mpi1" / "weights.npz")
    assert meta["ranks"] == 1 and _same_bits(state, plain.model.state_dict())


@needs_mpi
def test_a_rank_that_leaves_ends_the_run_with_a_clear_error_within_the_timeout(tiny_data, tmp_path):
    proc, seconds = _train(tiny_data, tmp_path, "--distributed", "--collective-timeout", "4",
                           "--test-fault", "1:3:exit")
    said = f"status {proc.returncode} after {seconds:.1f} s:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode != 0, said
    assert "kidney train: error: rank 0: no gradients from rank 1 within 4 s at optimiser step 3" in proc.stderr, said
    assert seconds < 4 + 60, said  # the deadline, plus start-up and two steps
    assert [r["step"] for r in _log(tmp_path)] == [1, 2] and not (tmp_path / "weights.npz").exists(), said


@needs_mpi
def test_a_killed_rank_ends_the_run(tiny_data, tmp_path):
    proc, seconds = _train(tiny_data, tmp_path, "--distributed", "--collective-timeout", "30",
                           "--test-fault", "1:2:kill")
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    # MPICH's launcher ends the job when a rank is killed; else rank 0's deadline does
    assert "BAD TERMINATION" in said or "no gradients from rank 1" in said, said[-3000:]
    assert seconds < 30 + 60


@needs_mpi
def test_two_ranks_make_and_share_one_sample_cache(tiny_data, two_rank_run, tmp_path):
    """Both ranks start with no cache: each that finds none writes one, the first moved into place is
    kept and the others dropped, no partial folder is left, and the run is bitwise the two-rank run
    without a cache; a second run maps it on both ranks."""
    cache = tmp_path / "cache"
    for out in ("first", "second"):
        proc, _ = _train(tiny_data, tmp_path / out, "--distributed", "--sample-cache", str(cache))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _same_bits(read_weights(tmp_path / out / "weights.npz")[0],
                          read_weights(two_rank_run / "weights.npz")[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "first", "second"]
