"""The CUDA backend without a GPU: every kernel file compiles with nvcc (sm_80, sm_90), the emulation
harness catches what it claims to catch, and the knobs and schedules only the CUDA host code has.

The conformance of the emulated backend itself (every case of :mod:`sparseconv.testing.suite`, the
hypothesis cases, finite differences, ...) is in the backend-agnostic tests: ``cuda-emu`` is a
parameter of the ``backend`` fixture (tests/conftest.py), next to the reference and Numba.

The emulation library is compiled once per test run (and cached across runs, keyed by a hash of
the sources). What these tests prove and what they cannot is in docs/gpu.md.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import sparseconv
from sparseconv.backends.cuda_host import (CONST, CUDA_DIR, CUDA_SOURCES, NVRTC_OPTIONS, combined_source,
                                           cuda_source_paths, kernel_names)
from sparseconv.backends.cuda_emulation import (EmulatedCudaBackend, EmulatedKernels, EmulationError,
                                                default_kernels, find_compiler)
from sparseconv.testing import kernel_checks as checks
from sparseconv.testing import suite
from sparseconv.testing.compare import assert_bitwise, assert_close

SELFTEST = Path(__file__).with_name("cuda") / "emu_selftest.cu"
ARCHS = ("sm_80", "sm_90")


# --- nvcc: the real CUDA compiler --------------------------------------------------------------------

@pytest.fixture(scope="module")
def nvcc_results(tmp_path_factory):
    """Compile every .cu file, and the single NVRTC translation unit, for each arch (in parallel)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA compile check needs the CUDA toolkit")
    out = tmp_path_factory.mktemp("cubin")
    combined = out / "sparseconv_combined.cu"
    combined.write_text(combined_source())
    jobs = [(p.name, p, arch) for p in cuda_source_paths() for arch in ARCHS]
    jobs += [("combined", combined, arch) for arch in ARCHS]
    std = [o for o in NVRTC_OPTIONS if o.startswith("--std")]

    def compile_one(job):
        name, path, arch = job
        cmd = [nvcc, f"-arch={arch}", "-cubin", *std, "-lineinfo", "--resource-usage", "-Werror", "all-warnings",
               "-I", str(CUDA_DIR), "-o", str(out / f"{path.stem}.{arch}.cubin"), str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return (name, arch), (proc.returncode, proc.stdout + proc.stderr, " ".join(cmd))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(compile_one, jobs))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(CUDA_SOURCES) + ["combined"])
def test_nvcc_compiles(nvcc_results, name, arch):
    rc, log, cmd = nvcc_results[(name, arch)]
    assert rc == 0, f"nvcc failed:\n$ {cmd}\n{log}"
    spills = [int(b) for b in re.findall(r"(\d+) bytes spill stores", log)]
    assert not any(spills), f"register spills in {name} for {arch}:\n{log}"


def test_every_cu_file_is_built():
    """Each .cu in backends/cuda is part of the NVRTC unit (a forgotten file would be missing on GPU)."""
    assert sorted(p.name for p in CUDA_DIR.glob("*.cu")) == sorted(CUDA_SOURCES)
    text = combined_source()
    assert "#include" not in text, "the NVRTC unit must not include files (NVRTC has no system headers)"
    assert kernel_names() == re.findall(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?(\w+)', text)


# --- the CPU emulation -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernels():
    if find_compiler() is None:
        pytest.skip("no C++ compiler (g++/c++/clang++) on PATH: cannot build the CUDA emulation")
    return default_kernels()


@pytest.fixture(scope="module")
def emu(kernels):
    return EmulatedCudaBackend(kernels)


@pytest.fixture(scope="module")
def emu_small_chunks(kernels):
    """Reduction knobs shrunk so that small inputs take the multi-chunk paths (partials + chunk sum)."""
    be = EmulatedCudaBackend(kernels, log=[])
    be.WGRAD_TARGET_BLOCKS = 64
    be.WGRAD_MIN_CHUNK_ROWS = 16
    be.DW_WGRAD_TARGET_THREADS = 4096
    be.DW_WGRAD_MIN_CHUNK_ROWS = 5
    be.SEGMENT_CHUNK_ROWS = 7
    be.MAX_BLOCKS_1D = 3  # grid-stride loops really loop
    return be


def test_registry_matches_sources(kernels):
    assert sorted(kernels.names) == sorted(kernel_names())
    # signatures are real C++ parameter types: spot-check one of each kind
    assert kernels.signatures["sc_hash_insert"][1] == ["pci8", "i8", "pu8", "pi4", "u8"]
    assert kernels.signatures["sc_conv_forward_f64"][1][:4] == ["pcf8", "pcf8", "pci4", "pf8"]


def test_host_constants_come_from_the_header():
    assert CONST["SC_BLOCK"] == 256
    for tile in ("SC_CONV_NARROW", "SC_CONV", "SC_CONV_WIDE"):
        assert CONST[f"{tile}_BM"] % CONST[f"{tile}_TY"] == 0 and CONST[f"{tile}_BN"] % CONST[f"{tile}_TX"] == 0
        assert CONST[f"{tile}_BM"] <= CONST[f"{tile}_TX"] * CONST[f"{tile}_TY"]  # one thread loads each row index
    for tile in ("SC_WGRAD_NARROW", "SC_WGRAD", "SC_WGRAD_WIDE"):
        assert CONST[f"{tile}_BCI"] % CONST[f"{tile}_TY"] == 0 and CONST[f"{tile}_BCO"] % CONST[f"{tile}_TX"] == 0


# (Cin, Cout) reaching the three tile shapes of the forward and of the weight gradient, partial tiles too
TILE_WIDTHS = [(3, 5), (16, 16), (32, 16), (16, 32), (17, 33), (33, 40)]


@pytest.mark.parametrize("cin, cout", TILE_WIDTHS)
def test_each_conv_tile_shape_matches_the_reference(emu_small_chunks, cin, cout):
    """Forward, dX and dW with the tiles ``conv_tiles`` picks for these widths (dX runs the forward
    of the transposed widths), float32 and float64, against the reference."""
    emu_small_chunks.log.clear()
    for dtype in (np.float32, np.float64):
        checks.check_conv(emu_small_chunks, "b2_odd", "subm_k3_d1", cin, cout, dtype)
    launched = {name.rsplit("_", 1)[0] for name, _, _ in emu_small_chunks.log if name.startswith("sc_conv")}
    (fwd, *_), (wgrad, *_) = emu_small_chunks.conv_tiles(cin, cout)
    assert launched == {fwd, wgrad, emu_small_chunks.conv_tiles(cout, cin)[0][0]}


def test_tile_widths_reach_every_conv_kernel():
    kernels = set()
    for cin, cout in TILE_WIDTHS:
        (fwd, *_), (wgrad, *_) = EmulatedCudaBackend.conv_tiles(cin, cout)
        kernels |= {fwd, wgrad}
    assert kernels == {f"sc_conv_{op}{size}" for op in ("forward", "wgrad") for size in ("_narrow", "", "_wide")}


@pytest.mark.parametrize("cin, cout", [(21, 13), (40, 36)])
def test_conv_tile_shape_changes_no_bit(emu, monkeypatch, cin, cout):
    """Any forward tile and any weight-gradient tile give the same bits at any width: each output
    is the same chain of operations, and the weight gradient's row chunks do not depend on the tile."""
    kmap = checks.sites_and_maps(3, "b2_odd")[1]["subm_k3_d1"]
    rng = np.random.default_rng(4)
    f = rng.standard_normal((kmap.n_in, cin)).astype(np.float32)
    w = rng.standard_normal((kmap.K, cin, cout)).astype(np.float32)
    g = rng.standard_normal((kmap.n_out, cout)).astype(np.float32)
    monkeypatch.setattr(emu, "WGRAD_TARGET_BLOCKS", 64)  # several row chunks
    monkeypatch.setattr(emu, "WGRAD_MIN_CHUNK_ROWS", 16)
    want_out, want_dw = emu.conv_forward(f, w, kmap), emu.conv_weight_grad(f, g, kmap)
    tiles = [EmulatedCudaBackend.conv_tiles(c, c) for c in (8, 24, 40)]  # narrow, default, wide
    assert len({fwd[0] for fwd, _ in tiles}) == len({wg[0] for _, wg in tiles}) == 3
    for (fwd, _), (_, wgrad) in itertools.product(tiles, tiles):
        monkeypatch.setattr(emu, "conv_tiles", lambda ci, co, fwd=fwd, wgrad=wgrad: (fwd, wgrad))
        assert_bitwise(emu.conv_forward(f, w, kmap), want_out, f"forward, {fwd[0]} tile")
        assert_bitwise(emu.conv_weight_grad(f, g, kmap), want_dw, f"weight gradient, {wgrad[0]} tile")


SMALL_CHUNK_CASES = [c for c in suite.cases() if c.name.startswith((
    "conv_b2_odd_subm_k3_d1", "conv_b2_odd_down_k2s2", "depthwise_b2_odd", "segment_sum", "hash", "neighbor_table_b3"))]


@pytest.mark.parametrize("case", SMALL_CHUNK_CASES, ids=[c.name for c in SMALL_CHUNK_CASES])
def test_kernel_matches_reference_small_chunks(emu_small_chunks, case):
    result = suite.run_case(emu_small_chunks, case)
    assert result.passed, result.problems


def test_small_chunks_really_split(emu_small_chunks):
    """The shrunk knobs do take the multi-chunk / grid-stride paths."""
    emu_small_chunks.log.clear()
    checks.check_conv(emu_small_chunks, "b2_odd", "subm_k3_d1", 3, 5, np.float32)
    checks.check_depthwise(emu_small_chunks, "b2_odd", "subm_k3_d1", 7, np.float64)
    checks.check_segment_sum(emu_small_chunks, 3000, 7, 5, np.float32)
    launched = {k for k, _, _ in emu_small_chunks.log}
    assert {"sc_sum_chunks_f32", "sc_sum_chunks_f64", "sc_segment_partial_f32"} <= launched
    wgrad_grids = [g for k, g, _ in emu_small_chunks.log if k.startswith("sc_conv_wgrad")]
    assert max(g[1] for g in wgrad_grids) > 1, "conv weight grad ran in a single chunk"
    assert any(g[0] == 3 for k, g, _ in emu_small_chunks.log if k.startswith("sc_segment")), "grid-stride not capped"


# --- scheduling: results must not depend on block/thread order ------------------------------------

SCHEDULES = [(1, False), (2, True), (12345, True)]


def _deterministic_outputs(be):
    x, maps = checks.sites_and_maps(3, "b2_odd")
    rng = np.random.default_rng(9)
    out = {}
    for name in ("subm_k3_d1", "down_k2s2", "inverse_k2s2"):
        kmap = maps[name]
        f = rng.standard_normal((kmap.n_in, 20)).astype(np.float32)
        w = rng.standard_normal((kmap.K, 20, 36)).astype(np.float32)
        g = rng.standard_normal((kmap.n_out, 36)).astype(np.float32)
        out[f"conv {name}"] = be.conv_forward(f, w, kmap)
        out[f"wgrad {name}"] = be.conv_weight_grad(f, g, kmap)
        out[f"dw {name}"] = be.depthwise_forward(f, w[:, :, 0].copy(), kmap)
        out[f"dwgrad {name}"] = be.depthwise_weight_grad(f, g[:, :20].copy(), kmap)
    v = rng.standard_normal((700, 9))
    out["segment_sum"] = be.segment_sum(v, np.array([0, 3, 3, 650, 700]))
    index = be.build_index(x.keys)
    out["neighbor_table"] = be.neighbor_table(index, x.coords, x.spatial_shape, maps["subm_k3_d1"].offsets)
    out["transpose"] = be.transpose_table(maps["down_k2s2"].neighbors, maps["down_k2s2"].n_in)
    return out


@pytest.mark.parametrize("seed,yield_atomics", SCHEDULES)
def test_results_bitwise_independent_of_schedule(emu_small_chunks, seed, yield_atomics):
    base = _deterministic_outputs(emu_small_chunks)
    other = _deterministic_outputs(emu_small_chunks.with_schedule(seed, yield_atomics))
    for key in base:
        assert_bitwise(base[key], other[key], f"{key} under schedule seed={seed}")


@pytest.mark.parametrize("seed", [1, 2, 99])
def test_hash_under_interleaved_atomics(emu, seed):
    """Threads interleaving at every atomicCAS (collisions claimed mid-probe): lookups stay exact,
    while the table layout does change with the schedule (so the interleaving is real)."""
    be = emu.with_schedule(seed, yield_atomics=True)
    checks.check_hash(be, 3000, seed=seed)
    keys = checks.random_sites(5, shape=(20, 20, 20), batch=2, density=0.5).keys
    a, b = emu.build_index(keys), be.build_index(keys)
    assert not np.array_equal(a.table_keys, b.table_keys)
    assert np.array_equal(np.sort(a.table_keys), np.sort(b.table_keys))


# --- the harness catches what it claims to catch ---------------------------------------------------

@pytest.fixture(scope="module")
def selftest(kernels):  # noqa: ARG001 - needs the same compiler
    return EmulatedKernels.build([SELFTEST])


def test_emulator_catches_out_of_bounds_write(selftest):
    with pytest.raises(EmulationError, match="invalid memory access .* 0 bytes past the end of argument 0"):
        selftest.launch("selftest_oob_write", (2,), (64,), (np.zeros(100, np.float32), np.int64(100)))


def test_emulator_catches_out_of_bounds_read(selftest):
    with pytest.raises(EmulationError, match="0 bytes past the end of argument 0 \\(float32, shape \\(77,\\)\\)"):
        selftest.launch("selftest_oob_read", (1,), (128,), (np.ones(77, np.float32), np.zeros(77, np.float32), np.int64(77)))


def test_emulator_catches_write_before_start(selftest):
    with pytest.raises(EmulationError, match="out of bounds before argument 0"):
        selftest.launch("selftest_write_before", (1,), (32,), (np.zeros(10, np.float32),))


def test_emulator_survives_faults(kernels, selftest):
    """After a reported fault, launches work normally again (no leaked state, Python unharmed)."""
    for _ in range(3):
        with pytest.raises(EmulationError):
            selftest.launch("selftest_oob_read", (1,), (128,), (np.ones(5, np.float32), np.zeros(5, np.float32), np.int64(5)))
    out = np.zeros(4, np.float32)
    kernels.launch("sc_sum_chunks_f32", (1,), (256,), (np.ones(8, np.float32), np.int64(2), np.int64(4), out))
    assert out.tolist() == [2, 2, 2, 2]


def test_emulator_catches_divergent_barrier(selftest):
    with pytest.raises(EmulationError, match="divergent __syncthreads"):
        selftest.launch("selftest_divergent_barrier", (1,), (32,), (np.zeros(32, np.int32),))


def test_emulator_catches_mismatched_barriers(selftest):
    with pytest.raises(EmulationError, match="mismatched barriers"):
        selftest.launch("selftest_mismatched_barriers", (1,), (32,), (np.zeros(32, np.int32),))


def test_schedules_expose_a_shared_memory_race(selftest):
    results = set()
    for seed in (0, 1, 2, 3):
        out = np.zeros(4, np.int32)
        selftest.launch("selftest_shared_race", (4,), (64,), (out,), seed=seed)
        results.add(tuple(out))
    assert len(results) > 1, "every schedule gave the same last writer"


def test_yields_at_atomics_expose_a_lost_update(selftest):
    counter = np.zeros(1, np.int32)
    selftest.launch("selftest_lost_update", (1,), (32,), (counter, np.zeros(1, np.int32)))
    assert counter[0] == 32  # no interleaving: looks right
    selftest.launch("selftest_lost_update", (1,), (32,), (counter := np.zeros(1, np.int32), np.zeros(1, np.int32)),
                    yield_atomics=True)
    assert counter[0] < 32  # interleaved at the atomic: the race shows


def test_barriers_and_syncthreads_count_under_all_schedules(selftest):
    data = np.arange(4 * 256, dtype=np.int32)
    for seed in (0, 1, 5):
        out = np.zeros(4, np.int32)
        selftest.launch("selftest_block_sum", (4,), (256,), (data, out), seed=seed)
        assert out.tolist() == data.reshape(4, 256).sum(axis=1).tolist()


def test_emulator_checks_arguments(kernels):
    f32 = np.zeros(8, np.float32)
    with pytest.raises(EmulationError, match="needs a NumPy int64 scalar"):
        kernels.launch("sc_sum_chunks_f32", (1,), (256,), (f32, 1, np.int64(8), f32.copy()))
    with pytest.raises(EmulationError, match="needs float32"):
        kernels.launch("sc_sum_chunks_f32", (1,), (256,), (f32.astype(np.float64), np.int64(1), np.int64(8), f32))
    with pytest.raises(EmulationError, match="not C-contiguous"):
        kernels.launch("sc_sum_chunks_f32", (1,), (256,), (np.zeros(16, np.float32)[::2], np.int64(1), np.int64(8), f32))
    with pytest.raises(EmulationError, match="overlaps"):
        kernels.launch("sc_sum_chunks_f32", (1,), (256,), (f32, np.int64(1), np.int64(8), f32))
    with pytest.raises(EmulationError, match="takes 4 arguments"):
        kernels.launch("sc_sum_chunks_f32", (1,), (256,), (f32,))
    with pytest.raises(EmulationError, match="invalid configuration"):
        kernels.launch("sc_sum_chunks_f32", (0,), (256,), (f32, np.int64(1), np.int64(8), f32.copy()))
    with pytest.raises(EmulationError, match="invalid configuration"):
        kernels.launch("sc_sum_chunks_f32", (1,), (2048,), (f32, np.int64(1), np.int64(8), f32.copy()))


def test_unwritten_outputs_are_poisoned(emu):
    assert np.isnan(emu._empty((3,), np.float32)).all()
    assert (emu._empty((3,), np.int32) == 0x5A5A5A5A).all()


# --- through the public API ------------------------------------------------------------------------

def test_registered_backend_runs_a_layer(emu):
    """Selected like any backend: a submanifold conv forward/backward through sparseconv.functional."""
    from sparseconv.functional import conv as F

    sparseconv.register_backend("cuda-emu", emu)
    x = checks.random_sites(11, **checks.SITES["b2_odd"])
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((len(x), 4)).astype(np.float32)
    weight = rng.standard_normal((27, 4, 6)).astype(np.float32)
    grad = rng.standard_normal((len(x), 6)).astype(np.float32)
    results = {}
    for name in ("reference", "cuda-emu"):
        y = checks.random_sites(11, **checks.SITES["b2_odd"])  # fresh kernel-map cache per backend
        with sparseconv.use_backend(name):
            from sparseconv import kmap as KM
            kmap = KM.submanifold_map(y, 3)
            results[name] = (F.conv_forward(feats, weight, kmap), *F.conv_backward(grad, feats, weight, kmap))
    sparseconv.backends._registered.pop("cuda-emu", None)  # keep other tests' backend lists unchanged
    for got, want in zip(results["cuda-emu"], results["reference"]):
        assert_close(got, want, "functional conv through the emulated backend")


def test_cupy_backend_missing_gives_one_clear_error():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed here")
    with pytest.raises(ImportError, match=re.escape("pip install sparseconv[gpu]")):
        sparseconv.backends.load_backend("cupy")
    assert "cupy" not in sparseconv.available_backends()


# --- the GPU-side Python, dry-run on the CPU (fake_cupy: NumPy + this emulation) -------------------

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check(args, fake=True, timeout=300):
    env = dict(os.environ)
    env.pop("SPARSECONV_FAKE_CUPY", None)
    if fake:
        env["SPARSECONV_FAKE_CUPY"] = "1"
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def test_gpu_check_dry_run(kernels, tmp_path):  # noqa: ARG001 - needs the compiler
    """benchmarks/gpu_check.py end to end through CupyBackend, with the GPU replaced by the emulation."""
    proc = _gpu_check(["--tiny", "--checks", "none", "--channels", "16", "--cpu-channels", "16", "--train",
                       "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = tmp_path.glob("gpu_check_*.json")
    report = json.loads(result.read_text())
    steps = {(r["set"], r["backend"]): r for r in report["train_steps"]}
    assert {(s, b) for s in ("stage1", "stage2-median") for b in ("cupy", "numba")} <= set(steps), steps
    assert all(r["ms"] > 0 and "error" not in r for r in steps.values() if r["backend"] in ("cupy", "numba"))
    rows = report["timings"]
    by = {(r["op"], r["backend"]): r for r in rows}
    assert by[("kernel map k3", "cupy")]["equal_to_cpu"] is True
    assert by[("subm conv fwd", "cupy")]["rel_err_vs_cpu"] < 1e-5
    assert by[("subm conv fwd", "cupy")]["deterministic"] and by[("subm conv bwd (dX+dW)", "cupy")]["deterministic"]
    proc = _gpu_check(["--small-case"])  # what --sanitize runs under compute-sanitizer
    assert proc.returncode == 0 and "matched the reference" in proc.stdout, proc.stdout + proc.stderr


def test_gpu_check_without_cupy_fails_cleanly():
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed here")
    proc = _gpu_check(["--tiny"], fake=False)
    assert proc.returncode == 2
    assert "pip install sparseconv[gpu]" in proc.stderr and "Traceback" not in proc.stderr
