"""The benchmark scripts run end to end in their smoke modes and write what they promise."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_conv_quick(tmp_path):
    out = tmp_path / "conv.json"
    subprocess.run([sys.executable, str(BENCH / "bench_conv.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, text=True)
    result = json.loads(out.read_text())
    rows = result["sets"][0]["rows"]
    assert {r["method"] for r in rows} >= {"sparseconv[numba]", "sparseconv[reference]", "dense conv3d [numpy]"}
    assert all(r["fwd_s"] > 0 and r["peak_mb"] >= 0 for r in rows if "peak_mb" in r)
    assert out.with_suffix(".md").read_text().count("|") > 20
    # the machine says which CPU ran it: two machines of one architecture differ several-fold
    assert result["machine"]["cpu_model"] and isinstance(result["machine"]["cpu_model"], str)


def test_bench_alloc_small(tmp_path):
    out = tmp_path / "alloc.json"
    subprocess.run([sys.executable, str(BENCH / "bench_alloc.py"), "--rows", "5000", "--channels", "8",
                    "--threads", "1", "--repeats", "1", "--out", str(out)], check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    ways = result["seconds"]["1"]
    assert set(ways) == {"allocated inside Numba", "allocated by NumPy", "written again (no allocation)"}
    assert all(v > 0 for v in ways.values()) and result["rows"] == 5000
    assert result["cpu_model"] in out.with_suffix(".md").read_text()
    assert out.with_suffix(".md").read_text().count("| 1 |") == 1


def test_bench_network_quick(tmp_path):
    out = tmp_path / "net.json"
    subprocess.run([sys.executable, str(BENCH / "bench_network.py"), "--quick", "--methods", "sparse,dense",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    sparse = [r for r in result["rows"] if r["method"] == "sparse"]
    assert {r["input"] for r in sparse} == {"stage1", "stage2-median"}
    assert all("time_reduction_pct" in r and "memory_reduction_pct" in r for r in sparse)
    assert result["machine"]["cpu_model"]
    assert out.with_suffix(".png").stat().st_size > 1000


def test_bench_pipeline_quick(tmp_path):
    out = tmp_path / "pipe.json"
    subprocess.run([sys.executable, str(BENCH / "bench_pipeline.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, text=True)
    case = json.loads(out.read_text())["cases"][0]
    m = case["median"]
    assert case["shape"] == [24, 96, 96] and len(case["runs"]) == 1
    assert all(m["seconds"][k] > 0 for k in ("read", "stage1", "roi", "write"))
    assert m["process_peak_mb"] >= max(m["peak_mb"].values()) > 0
    assert abs(m["total_s"] - sum(m["seconds"].values())) < 1e-6
    table = out.with_suffix(".md").read_text().splitlines()
    assert len(table) == 3 and table[0].count("|") == table[1].count("|") == table[2].count("|")


def test_kits_scan_grids_are_the_percentile_scans():
    sys.path.insert(0, str(BENCH))
    import bench_pipeline
    assert bench_pipeline.STATS.is_file(), (f"no KiTS23 statistics at {bench_pipeline.STATS}: the repository "
                                            "ships them in data/kits23_sample/ (see data/README.md)")
    grids, n = bench_pipeline.kits_scan_grids()
    assert n == 489
    (m_shape, m_sp), (p_shape, p_sp) = grids["median"], grids["p95"]
    assert np.prod(p_shape) > np.prod(m_shape) and m_shape[1:] == (512, 512)
    assert all(0.3 < s < 6 for s in m_sp + p_sp)


def test_bench_cohort_quick(tmp_path):
    """Serial and a 1-worker Dask LocalCluster on 4 tiny phantoms: the table, the JSON, same labels."""
    out = tmp_path / "cohort.json"
    subprocess.run([sys.executable, str(BENCH / "bench_cohort.py"), "--quick", "--engines", "serial,1",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert [r["engine"] for r in result["engines"]] == ["serial", "1"]
    for r in result["engines"]:
        assert r["cases"] == 4 and r["same_bits_as_serial"] and r["cases_per_min"] > 0 and r["peak_mb"] > 0
        assert r["wall_s"] >= r["run_s"] >= r["startup_s"] >= 0
    assert result["engines"][1]["startup_s"] > 0 and len(result["scans"]) == 4
    table = out.with_suffix(".md").read_text().splitlines()
    assert len(table) == 4 and "| --workers 1 | 1 × 1 | 4 |" in table[3] and table[3].count("|") == table[0].count("|")


def test_bench_train_ranks_quick(tmp_path):
    """1 and 2 MPI ranks on a tiny model: the table, the JSON, the all-reduce times."""
    import importlib.util
    import os
    import shutil

    import pytest
    if importlib.util.find_spec("mpi4py") is None or not ((Path(sys.executable).parent / "mpiexec").is_file()
                                                          or shutil.which("mpiexec")):
        pytest.skip("mpi4py and mpiexec not installed (pip install sparseconv[mpi])")
    out = tmp_path / "ranks.json"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(BENCH / "bench_train_ranks.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, text=True, env=env)
    result = json.loads(out.read_text())
    assert [r["ranks"] for r in result["runs"]] == [1, 2] and result["model"] == "tiny"
    for r in result["runs"]:
        assert r["steps"] == 2 and r["timed_steps"] == 1 and r["s_per_step"] > 0 and r["allreduce_s_per_step"] >= 0
        assert abs(r["samples_per_s"] - 2 * r["steps_per_s"]) < 1e-9 and r["wall_s"] > r["s_per_step"]
    table = out.with_suffix(".md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| 1 | 1 × 1 | 2 |") and "| 1.00 |" in table[2]


def test_bench_train_quick(tmp_path):
    """Tiny model on both inputs: a row per input, per-op tables at every thread count whose ops sum to
    at most the step, peak memory, the twin's row (or a note when PyTorch is absent)."""
    out = tmp_path / "train.json"
    subprocess.run([sys.executable, str(BENCH / "bench_train.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, text=True)
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["input"], r["config"]) for r in rows] == [("stage1", "tiny"), ("stage2-median", "tiny")]
    counts = result["machine"]["thread_counts"]
    for r in rows:
        threads = r["sparse"]["threads"]
        assert sorted(threads, key=int) == [str(n) for n in counts] and r["sparse"]["peak_mb"] > 0
        assert r["sparse"]["held_mb"] > 0  # the model, its optimiser state and the input at least
        for t in threads.values():
            ops = t["ops"]
            assert all(v >= 0 for v in ops.values()) and len(t["runs_s"]) == 1
            assert t["faults"] >= 0 and t["runs_faults"] == [t["faults"]]
            assert 0 < sum(ops.values()) <= t["step_s"] and t["remainder_s"] >= 0
            for op in ("kernel-map build", "conv forward", "depthwise dW", "pointwise/linear", "LayerNorm backward",
                       "GRN forward", "GELU backward", "loss", "optimiser"):
                assert ops[op] > 0, op
        assert r["sparse"]["step_s"] == threads[str(max(counts))]["step_s"]
        if result["torch_note"] is None:
            assert "skipped" in r["torch"] or (r["torch"]["step_s"] > 0 and r["torch_over_sparse"] > 0)
        else:
            assert "torch" not in r
    table = out.with_suffix(".md").read_text()
    assert table.count("### Where the sparse step's time goes") == 2 and "| **step** |" in table
    assert table.count("Every timed step (s), with the page faults it took: 1 thread: ") == 2
    assert result["warmup_steps"] == 3 and "| sparse held MB |" in table
    rates = result["machine"]["stream_gb_s"]
    assert sorted(rates, key=int) == [str(n) for n in counts] and all(r > 0 for r in rates.values())
    assert "Memory streaming rate of the Numba backend's elementwise add (out = a + b, 3 × 0.5 MB): " in table
    if len(counts) > 1:  # the second core's gain, as the per-op tables give it
        ratio = rates[str(max(counts))] / rates[str(min(counts))]
        assert f"({ratio:.2f}× on {max(counts)} threads)." in table
    assert result["numpy_huge_pages"] is True and "NumPy's huge-page advice on" in table  # NumPy's default
    # freed memory kept in the step's process, as kidney train does (glibc, where CI runs)
    from sparseconv.allocator import _mallopt
    if _mallopt() is not None:
        assert result["keep_freed_memory"] is True and all(r["sparse"]["kept_freed_memory"] for r in rows)
        assert "freed memory kept in the process" in table
        # the warm-up: the first step, then one round of a step per thread count (--quick allows 3 steps)
        expect = 1 + len(counts) if 1 + len(counts) <= 3 else 1
        assert [r["sparse"]["warmup_steps"] for r in rows] == [expect] * 2
        assert f"the rows took {expect}, {expect})" in table


def test_the_checkpointed_twin_takes_the_same_training_step():
    """Activation checkpointing changes where the twin's memory goes, not its step: the same loss and
    the same weights after AdamW (PyTorch optional: skipped without it)."""
    import pytest
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(BENCH))
    from bench_train import make_targets
    from torch_twin import TorchTrainStep

    from kidney.model import KidneyNet
    rng = np.random.default_rng(0)
    sites = np.argwhere(rng.random((12, 12, 12)) < 0.3)
    coords = np.concatenate([np.zeros((len(sites), 1), np.int64), sites], axis=1).astype(np.int32)
    feats = rng.standard_normal((len(sites), 1)).astype(np.float32)
    model = KidneyNet("tiny", seed=0)
    steps = [TorchTrainStep(model, coords, feats, (12, 12, 12), make_targets(len(sites)), checkpoint=c)
             for c in (False, True)]
    plain, checkpointed = (s.step() for s in steps)
    assert steps[1].net.checkpoint and np.isfinite(plain)
    assert checkpointed == pytest.approx(plain, rel=1e-6)
    for key, value in steps[0].net.p.items():
        torch.testing.assert_close(steps[1].net.p[key], value, rtol=1e-5, atol=1e-7)
        assert not torch.equal(value, torch.from_numpy(np.asarray(model.state_dict()[key], np.float32))) \
            or not value.grad.any()  # every weight with a gradient moved


def test_bench_train_switches_numpy_huge_pages_and_answers_the_previous_setting():
    import pytest
    sys.path.insert(0, str(BENCH))
    from bench_train import numpy_huge_pages, set_numpy_huge_pages
    if numpy_huge_pages() is None:
        pytest.skip("this NumPy has no huge-page switch")
    before = set_numpy_huge_pages(False)
    try:
        assert set_numpy_huge_pages(True) is False and numpy_huge_pages() is True
        assert set_numpy_huge_pages(False) is True and numpy_huge_pages() is False
    finally:
        set_numpy_huge_pages(before)
