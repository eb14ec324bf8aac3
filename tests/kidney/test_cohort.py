"""kidney segment on folders, in one process: the manifest, a bad case among good ones, --continue,
Ctrl-C, shards, file modes, and no output ever over an input (kidney.cohort; Dask: test_cohort_dask.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kidney import cli, cohort

REPO = Path(__file__).resolve().parents[2]


def _segment(src, out, weights, *extra) -> int:
    return cli.main(["segment", "-i", str(src), "-o", str(out), "--weights", str(weights), "--quiet", *extra])


def _cases(out) -> dict:
    return cohort.read_manifest(out)


def _outputs(out) -> list:
    return sorted(p.name for p in Path(out).iterdir() if p.name.endswith(".nii.gz"))


def _no_temp_files(out) -> bool:
    return not [p for p in Path(out).iterdir() if p.name.startswith(".")]


def test_a_bad_case_is_failed_and_the_run_goes_on(cohort_weights, make_cohort, tmp_path, capsys):
    data = make_cohort(tmp_path / "scans", n=3, corrupt=["c1b"])
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        assert _segment(data, out, cohort_weights) == 1
    finally:
        os.umask(old)
    text = capsys.readouterr()
    assert f"4 case(s) into {out}: 3 done, 1 failed, 0 skipped" in text.out
    assert "FAILED c1b: NiftiError" in text.err and str(data / "c1b_0000.nii.gz") in text.err
    rows = _cases(out)
    assert {k: r["status"] for k, r in rows.items()} == {"c0": "done", "c1": "done", "c1b": "failed", "c2": "done"}
    bad = rows["c1b"]
    assert "not a readable NIfTI" in bad["error"] and bad["output"] is None and bad["input_bytes"] > 0
    for case in ("c0", "c1", "c2"):
        r = rows[case]
        st = os.stat(data / f"{case}_0000.nii.gz")
        assert (r["input_bytes"], r["input_mtime_ns"]) == (st.st_size, st.st_mtime_ns)
        assert r["seconds"] > 0 and r["peak_mb"] > 0 and r["n_rois"] >= 0 and r["error"] is None
        assert r["input"] == str(data / f"{case}_0000.nii.gz") and r["output"] == str(out / f"{case}.nii.gz")
    assert _outputs(out) == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz"] and _no_temp_files(out)
    for name in _outputs(out) + [cohort.MANIFEST]:  # the umask's mode, not mkstemp's 0600
        assert os.stat(out / name).st_mode & 0o777 == 0o640, name
    runs = cohort.read_runs(out)
    assert [r["run"] for r in runs] == ["started", "finished"] and runs[-1]["failed"] == 1

    # the bad file gone: a plain rerun refuses (pointing at --continue), --continue skips what is done
    (data / "c1b_0000.nii.gz").unlink()
    mtimes = {p: os.stat(out / p).st_mtime_ns for p in _outputs(out)}
    assert _segment(data, out, cohort_weights) == 2
    assert "c0.nii.gz exists (and 2 more of the 3 outputs); pass --continue" in capsys.readouterr().err
    assert _segment(data, out, cohort_weights, "--continue") == 0
    assert "3 case(s) into" in capsys.readouterr().out
    assert {r["status"] for r in _cases(out).values() if r["case"] != "c1b"} == {"skipped"}
    assert {p: os.stat(out / p).st_mtime_ns for p in _outputs(out)} == mtimes


def test_continue_segments_again_what_changed(cohort_weights, make_cohort, tmp_path, capsys):
    data = make_cohort(tmp_path / "scans", n=3)
    out = tmp_path / "out"
    assert _segment(data, out, cohort_weights) == 0
    first = (out / "c1.nii.gz").read_bytes()
    st = os.stat(data / "c1_0000.nii.gz")
    os.utime(data / "c1_0000.nii.gz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # input "changed"
    (out / "c2.nii.gz").unlink()  # an output lost
    capsys.readouterr()
    assert _segment(data, out, cohort_weights, "--continue") == 0
    assert "--continue: segmenting 1 case(s) again whose output exists (input changed)" in capsys.readouterr().out
    assert {k: r["status"] for k, r in _cases(out).items()} == {"c0": "skipped", "c1": "done", "c2": "done"}
    assert (out / "c1.nii.gz").read_bytes() == first  # same input bits, same labels
    # other weights: nothing is skipped
    other = tmp_path / "other_weights"
    other.mkdir()
    from kidney.model import KidneyNet, save_weights
    save_weights(KidneyNet("tiny", seed=5), other / "stage1_tiny.npz", {"stage": 1, "spacing_mm": 8.0})
    (other / "stage2_tiny.npz").write_bytes((cohort_weights / "stage2_tiny.npz").read_bytes())
    assert _segment(data, out, other, "--continue") == 0
    assert {r["status"] for r in _cases(out).values()} == {"done"}
    assert cli.main(["segment", "-i", str(data), "-o", str(out), "--weights", str(other), "--continue",
                     "--overwrite"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_ctrl_c_keeps_finished_cases_and_continue_finishes(cohort_weights, make_cohort, tmp_path, capsys,
                                                           takes_ctrl_c):
    """A real SIGINT to a real ``kidney segment`` process while it works on its third case (the test
    hook makes c2 hang), then ``--continue``."""
    data = make_cohort(tmp_path / "scans", n=4)
    out = tmp_path / "out"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "c2").write_text("hang")
    env = dict(os.environ, **{cohort.TEST_HOOK_ENV: str(hooks)})
    proc = subprocess.Popen([sys.executable, "-m", "kidney", "segment", "-i", str(data), "-o", str(out),
                             "--weights", str(cohort_weights), "--quiet"], cwd=REPO, env=env,
                            preexec_fn=takes_ctrl_c,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / cohort.MANIFEST).exists() and len(_cases(out)) == 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None and sorted(_cases(out)) == ["c0", "c1"]
        while time.monotonic() < deadline and not (hooks / "c2.hanging").exists():  # inside c2
            time.sleep(0.05)
        assert (hooks / "c2.hanging").exists()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted: 2 done, 0 failed, 0 skipped, 2 left" in stdout and "--continue" in stdout
    last = cohort.read_runs(out)[-1]
    assert last["run"] == "interrupted" and (last["done"], last["left"]) == (2, 2)
    assert _outputs(out) == ["c0.nii.gz", "c1.nii.gz"] and _no_temp_files(out)
    (hooks / "c2").unlink()
    assert _segment(data, out, cohort_weights, "--continue") == 0
    rows = _cases(out)
    assert {k: r["status"] for k, r in rows.items()} == {"c0": "skipped", "c1": "skipped", "c2": "done", "c3": "done"}
    assert cohort.read_runs(out)[-1]["run"] == "finished"


def test_per_case_timeout_fails_the_case_not_the_run(cohort_weights, make_cohort, tmp_path, monkeypatch, capsys):
    data = make_cohort(tmp_path / "scans", n=2)
    # a first run compiles (or loads) the CPU kernels, so the timed run measures only the cases; the
    # limit leaves a normal case room even on a loaded machine
    assert _segment(data, tmp_path / "warm", cohort_weights) == 0
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "c0").write_text("hang")
    monkeypatch.setenv(cohort.TEST_HOOK_ENV, str(hooks))
    assert _segment(data, tmp_path / "out", cohort_weights, "--timeout", "8") == 1
    rows = _cases(tmp_path / "out")
    assert rows["c0"]["status"] == "failed" and rows["c0"]["error"] == "CaseTimeout: timed out after 8 s"
    assert rows["c1"]["status"] == "done" and _outputs(tmp_path / "out") == ["c1.nii.gz"]


def test_no_output_ever_overwrites_an_input(cohort_weights, make_cohort, tmp_path, capsys):
    data = make_cohort(tmp_path / "scans", n=1)
    src = data / "c0_0000.nii.gz"
    before = src.read_bytes()
    for out in (src, tmp_path / "link.nii.gz"):
        if out != src:
            out.symlink_to(src)
        for extra in ([], ["--overwrite"]):
            code = cli.main(["segment", str(src), "-o", str(out), "--weights", str(cohort_weights), *extra])
            assert code == 2
            err = capsys.readouterr().err
            assert f"output {out} would overwrite input {src}" in err, err
    os.link(src, tmp_path / "hard.nii.gz")  # the same file under another name
    assert cli.main(["segment", str(src), "-o", str(tmp_path / "hard.nii.gz"), "--overwrite", "--weights",
                     str(cohort_weights)]) == 2
    assert "would overwrite input" in capsys.readouterr().err
    # a folder into itself, nnU-Net style names: c0.nii.gz is an input and would be c0's output
    nn = tmp_path / "nn"
    nn.mkdir()
    (nn / "c0.nii.gz").write_bytes(before)
    assert _segment(nn, nn, cohort_weights, "--overwrite") == 2
    assert f"output {nn / 'c0.nii.gz'} would overwrite input {nn / 'c0.nii.gz'}" in capsys.readouterr().err
    # two inputs with one case id
    (nn / "c0.nii.gz").rename(nn / "c0_0000.nii.gz")
    (nn / "c0.nii").write_bytes(b"")
    assert _segment(nn, tmp_path / "out", cohort_weights) == 2
    assert "would both be written to" in capsys.readouterr().err
    assert src.read_bytes() == before == (nn / "c0_0000.nii.gz").read_bytes()
    assert not (tmp_path / "out").exists() and not (nn / cohort.MANIFEST).exists()  # refused before any work


def test_shards_are_disjoint_and_cover_the_folder(cohort_weights, make_cohort, tmp_path):
    cases = [cohort.Case(f"case_{i:05d}", f"/in/{i}", f"/out/{i}") for i in (7, 3, 0, 12, 5, 9, 1)]
    for k in (1, 2, 3, 7, 10):
        parts = [cohort.select_part(cases, k, i) for i in range(k)]
        ids = [c.case_id for part in parts for c in part]
        assert sorted(ids) == sorted(c.case_id for c in cases) and len(set(ids)) == len(cases)
        assert parts == [cohort.select_part(list(reversed(cases)), k, i) for i in range(k)]  # deterministic
    with pytest.raises(ValueError, match="--part-id"):
        cohort.select_part(cases, 3, 3)
    data = make_cohort(tmp_path / "scans", n=5)
    out = tmp_path / "out"
    for i in range(2):
        assert _segment(data, out, cohort_weights, "--num-parts", "2", "--part-id", str(i)) == 0
    assert sorted(p.name for p in out.glob("manifest*")) == ["manifest.part0-of-2.jsonl", "manifest.part1-of-2.jsonl"]
    assert _outputs(out) == [f"c{i}.nii.gz" for i in range(5)]
    assert {k: r["status"] for k, r in _cases(out).items()} == {f"c{i}": "done" for i in range(5)}
    assert _segment(data, out, cohort_weights, "--continue") == 0  # the shards' manifests count
    assert {r["status"] for r in _cases(out).values()} == {"skipped"}


def test_workers_without_dask_is_a_clear_error(cohort_weights, make_cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    data = make_cohort(tmp_path / "scans", n=1)
    assert _segment(data, tmp_path / "out", cohort_weights, "--workers", "2") == 2
    assert "pip install 'sparseconv[cluster]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_manifest_reader_takes_the_latest_row_and_skips_a_torn_line(tmp_path):
    m = cohort.Manifest(tmp_path)
    m.write({"case": "a", "status": "failed", "time": "2026-01-01T00:00:00.000+00:00"})
    m.write({"case": "a", "status": "done", "time": "2026-01-01T00:00:01.000+00:00"})
    m.write({"run": "finished", "time": "2026-01-01T00:00:02.000+00:00"})
    with open(m.path, "a") as f:
        f.write('{"case": "b", "sta')  # a crash in the middle of a line
    assert cohort.read_manifest(tmp_path) == {"a": {"case": "a", "status": "done",
                                                    "time": "2026-01-01T00:00:01.000+00:00"}}
    assert [r["run"] for r in cohort.read_runs(tmp_path)] == ["finished"]
    assert json.loads(m.path.read_text().splitlines()[0])["status"] == "failed"
