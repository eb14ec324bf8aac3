"""``python -m sparseconv.verify``: passes on the shipped CPU backends, catches a broken one by name."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparseconv
import sparseconv.testing.scale
from sparseconv import backends as B
from sparseconv import verify
from sparseconv.backends import pointwise
from sparseconv.backends.reference import ReferenceBackend
from sparseconv.testing import conformance as conf

ROOT = Path(__file__).resolve().parents[1]
CPU = [name for name in sparseconv.available_backends() if name != "cupy"]



@pytest.mark.parametrize("name", CPU)
def test_verify_passes_on_the_shipped_cpu_backends(name, capsys):
    assert verify.main(["--backend", name, "--quick"]) == 0
    out = capsys.readouterr().out
    assert f"PASS: backend '{name}' passes every op" in out
    for op in verify.ROWS:  # one table row per op, each passing
        assert any(line.startswith(op) and line.rstrip().endswith("PASS") for line in out.splitlines()), op


def test_the_worked_plugin_passes_verify(capsys, registry):
    """examples/07_your_backend.py, the backend written from scratch in docs/backends.md, through --plugin."""
    assert verify.main(["--plugin", str(ROOT / "examples" / "07_your_backend.py"), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "PASS: backend 'yours' passes every op" in out


def test_numba_is_thread_invariant():
    """The Numba backend at 1 and 2 threads, whatever NUMBA_NUM_THREADS this run has (a subprocess)."""
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_NUM_THREADS="2",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "sparseconv.verify", "--backend", "numba", "--quick"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "threads: the float32 cases at 1 and 2 threads (Numba" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.split()[:1] and line.split()[0] in verify.THREAD_ROWS]
    assert len(rows) == len(verify.THREAD_ROWS) and all(r[-2:] == ["yes", "PASS"] for r in rows), rows


@pytest.mark.slow
@pytest.mark.parametrize("name", CPU)
def test_the_shipped_cpu_backends_pass_the_scale_tier(name):
    report = verify.verify_backend(name, ops=["scale"])
    assert report.passed, report.row("scale").failures
    assert len(report.row("scale").scale) == len(sparseconv.testing.scale.BUDGETS)


def test_verify_fails_on_the_broken_backend_and_names_the_op():
    """The real command line, as a user runs it: exit status 1, the failing op named."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "sparseconv.verify", "--plugin", "examples/broken_backend.py", "--quick"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "registered 'broken'" in proc.stdout
    assert "FAIL: backend 'broken' fails depthwise (" in proc.stdout
    assert "'broken': depthwise" in proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.split() and line.split()[0] in verify.ROWS}
    assert rows["depthwise"].rstrip().endswith(")") and "FAIL" in rows["depthwise"]
    for op in set(verify.ROWS) - {"depthwise"}:  # the bug is in depthwise dW only
        assert rows[op].rstrip().endswith("PASS"), rows[op]
    assert "vs dense twin dW" in proc.stdout


class Crashy(ReferenceBackend):
    name = "crashy"

    def segment_sum(self, values, seg_ptr):
        raise NotImplementedError("segment_sum is not written yet")


class Sloppy(ReferenceBackend):
    """Forward in float32 drifts at 1e-3 — passes float64 vs dense, fails float32 vs the reference."""
    name = "sloppy"

    def conv_forward(self, feats, weight, kmap):
        out = super().conv_forward(feats, weight, kmap)
        return out * np.float32(1.001) if out.dtype == np.float32 else out


class NormDetached(ReferenceBackend):
    """GRN backward that treats the norm ``Nx`` as a constant (drops the ``x · dL/dG / G`` term): a
    plausible shortcut whose forward is exact and whose dγ, dβ still match."""
    name = "norm-detached"

    def grn_grad(self, grad, x, gamma, G, seg_ptr, eps):
        dx, d_gamma, d_beta = super().grn_grad(grad, x, gamma, G, seg_ptr, eps)
        _, _, scale = pointwise.grn_scale(np, G, gamma, eps)
        rows = np.repeat(scale, np.diff(seg_ptr), axis=0)
        return grad * rows, d_gamma, d_beta


def test_a_wrong_grn_gradient_fails_the_pointwise_row(registry):
    report = verify.verify_backend(NormDetached(), quick=True, ops=["pointwise"])
    assert report.failed_ops == ["pointwise"]
    assert "grn_grad dx" in report.rows[0].failures[0]


def test_a_crashing_kernel_is_a_failure_of_its_op_not_a_crash(registry):
    report = verify.verify_backend(Crashy(), quick=True, ops=["segment_sum"])
    assert report.failed_ops == ["segment_sum"]
    assert "not implemented: segment_sum is not written yet" in report.rows[0].failures[0]


def test_float32_disagreement_with_the_reference_is_caught(registry):
    report = verify.verify_backend(Sloppy(), quick=True, ops=["subm", "down"])
    assert report.failed_ops == ["subm", "down"]
    assert all("float32 vs reference out" in row.failures[0] for row in report.rows)
    assert all(row.worst["out"] < 1e-10 for row in report.rows)  # float64 stays exact


def test_plugin_by_module_name_with_a_backend_attribute(tmp_path, monkeypatch, registry):
    (tmp_path / "my_sparse_backend.py").write_text(
        "from sparseconv.backends.reference import ReferenceBackend\n"
        "class Mine(ReferenceBackend):\n    name = 'mine'\n"
        "backend = Mine()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert verify.load_plugin("my_sparse_backend") == ["mine"]
    assert B.load_backend("mine").name == "mine"


def test_plugin_that_registers_nothing_is_refused(tmp_path, capsys, registry):
    empty = tmp_path / "nothing.py"
    empty.write_text("x = 1\n")
    assert verify.main(["--plugin", str(empty)]) == 2
    assert "registered no backend" in capsys.readouterr().err


def test_missing_plugin_file_is_one_line_and_exit_2(tmp_path, capsys, registry):
    missing = tmp_path / "missing.py"
    assert verify.main(["--plugin", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(missing) in err and "no such file" in err


@pytest.mark.parametrize("body,message", [
    ("import no_such_module_for_sparseconv\n", "ModuleNotFoundError: No module named 'no_such_module_for_sparseconv'"),
    ("x = 1\ndef f():\n    raise RuntimeError('kernel table\\nnot ready')\nf()\n", "RuntimeError: kernel table not ready"),
])
def test_plugin_that_fails_to_import_is_one_line_and_exit_2(tmp_path, capsys, registry, body, message):
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text(body)
    assert verify.main(["--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err and str(plugin) in err and "line" in err


def test_unknown_backend_and_op_exit_2(capsys):
    assert verify.main(["--backend", "no-such-backend"]) == 2
    assert "unknown backend 'no-such-backend'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        verify.main(["--op", "no-such-op"])


def test_standard_cases_cover_every_op_layout_and_geometry():
    cases = conf.standard_cases()
    assert {c.op for c in cases} == set(conf.OPS)
    for op in conf.OPS:
        geometries = conf.CENTRED if op in ("subm", "depthwise") else conf.STRIDED
        got = {(c.kernel_size, c.stride, c.padding, c.dilation) for c in cases if c.op == op}
        assert got == set(geometries)
    quick = conf.standard_cases(quick=True)
    assert {c.op for c in quick} == set(conf.OPS) and len(quick) < len(cases) / 2
    assert {c.seed for c in quick} <= {c.seed for c in cases}  # the same cases, fewer of them
