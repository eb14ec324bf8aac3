"""The exercises: the skeleton fails ``verify`` naming each missing exercise, the solutions pass."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparseconv import backends as B
from sparseconv import verify

ROOT = Path(__file__).resolve().parents[1]
SKELETON = ROOT / "exercises" / "my_backend.py"
SOLVED = ROOT / "exercises" / "solutions" / "my_backend_solved.py"
EXERCISES = {"1": "neighbor_table", "2": "conv_forward", "3a": "transpose_table", "3b": "conv_weight_grad",
             "4": "down_table"}



def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def named(exercise: str) -> str:
    return f"not implemented: exercise {exercise} ({EXERCISES[exercise]})"


def test_every_stub_raises_has_a_hint_and_is_solved():
    skeleton = load(SKELETON, "exercise_skeleton_under_test")
    solved = load(SOLVED, "exercise_solved_under_test")
    be = skeleton.backend
    stubs = {name: getattr(be, name) for name in EXERCISES.values()}
    for exercise, name in EXERCISES.items():
        with pytest.raises(NotImplementedError, match=rf"^exercise {exercise} \({name}\)"):
            stubs[name](*([None] * (stubs[name].__code__.co_argcount - 1)))
        doc = stubs[name].__doc__
        assert name in skeleton.HINTS and all(part in doc for part in ("Args:", "Returns:", "Hint:")), name
        assert name in vars(solved.SolvedBackend), f"the solutions do not fill {name}"
    # every kernel that is not an exercise is the reference's
    for name in B._protocol_methods() - set(EXERCISES.values()):
        assert getattr(type(be), name) is getattr(B.load_backend("reference").__class__, name), name


def test_the_skeleton_fails_verify_naming_the_map_exercises_with_their_hints():
    """The command a learner runs first: every stub empty. The kernel-map checks reach exercises 1, 3a
    and 4; the delegated kernels pass."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "sparseconv.verify", "--plugin", "exercises/my_backend.py", "--quick"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    hints = load(SKELETON, "exercise_skeleton_hints").HINTS
    for exercise in ("1", "3a", "4"):
        assert named(exercise) in out, exercise
        assert f"hint ({EXERCISES[exercise]}): {hints[EXERCISES[exercise]]}" in out
    assert "Traceback" not in out + proc.stderr
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in verify.ROWS}
    for op in ("index", "segment_sum", "pointwise"):  # the reference's kernels, inherited
        assert rows[op].rstrip().endswith("PASS"), rows[op]
    for op in ("subm", "down", "inverse", "kernel_maps", "empty_inputs"):
        assert "FAIL" in rows[op], rows[op]


HALFWAY = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("exercise_solved_for_stage", {solved!r})
solved = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = solved
spec.loader.exec_module(solved)
HINTS = solved.skeleton.HINTS

class Halfway(solved.skeleton.MyBackend):
    name = "exercise-halfway"
{methods}

backend = Halfway()
"""


@pytest.mark.parametrize("done, next_named", [(("1", "3a", "4"), "2"), (("1", "2", "3a", "4"), "3b")])
def test_once_the_maps_work_verify_names_the_convolution_exercises(done, next_named, tmp_path, capsys, registry):
    methods = "".join(f"    {EXERCISES[e]} = solved.SolvedBackend.{EXERCISES[e]}\n" for e in done)
    plugin = tmp_path / f"halfway_{len(done)}.py"
    plugin.write_text(HALFWAY.format(solved=str(SOLVED), methods=methods))
    assert verify.main(["--plugin", str(plugin), "--quick"]) == 1
    out = capsys.readouterr().out
    assert named(next_named) in out
    assert f"hint ({EXERCISES[next_named]}): " in out
    for exercise in done:
        assert f"exercise {exercise} (" not in out, exercise
    assert "kernel_maps          15  matches the reference" in out


def test_the_solutions_pass_verify(capsys, registry):
    assert verify.main(["--plugin", str(SOLVED), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "PASS: backend 'exercise-solved' passes every op" in out
    assert "not implemented" not in out


def test_the_solved_backend_runs_a_network_like_the_reference(registry):
    """Selected as the current backend, the solutions drive a real layer stack: a down conv, a
    submanifold conv and the inverse conv back, forward and backward, equal to the reference."""
    import sparseconv
    from sparseconv import SparseTensor, nn
    from sparseconv.autograd import Tensor

    solved = load(SOLVED, "exercise_solved_network")
    sparseconv.register_backend(solved.backend.name, solved.backend)
    rng = np.random.default_rng(3)
    coords = np.argwhere(rng.random((2, 6, 7, 5)) < 0.3).astype(np.int32)
    feats = rng.standard_normal((len(coords), 2))
    results = {}
    for name in ("reference", solved.backend.name):
        with sparseconv.use_backend(name):
            init = dict(dtype=np.float64, rng=np.random.default_rng(0))
            down, conv, up = (nn.SparseConv3d(2, 4, 2, 2, **init), nn.SubMConv3d(4, 4, 3, **init),
                              nn.SparseInverseConv3d(4, 2, 2, **init))
            x = SparseTensor(coords, Tensor(feats.copy(), requires_grad=True), (6, 7, 5), batch_size=2)
            y = up(conv(down(x)))
            (y.feats_tensor * y.feats_tensor).sum().backward()
            results[name] = [y.feats, x.feats_tensor.grad, down.weight.grad, conv.weight.grad, up.weight.grad]
    for got, want in zip(results[solved.backend.name], results["reference"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_kernel_not_written_yet_is_reported_once_per_row_and_every_case_counts(registry):
    skeleton = load(SKELETON, "exercise_skeleton_rows")
    report = verify.verify_backend(skeleton.backend, quick=True, ops=["subm", "kernel_maps"])
    subm, maps = report.rows
    assert subm.n_failed == subm.cases > 1
    assert len(subm.failures) == 1 and named("1") in subm.failures[0]
    assert f"\n      hint (neighbor_table): {skeleton.HINTS['neighbor_table']}" in subm.failures[0]
    assert [named(e) in m for m, e in zip(maps.failures, ("1", "3a", "4"))] == [True, True, True]
