"""kidney segment on Dask (kidney.cohort, kidney.dask_worker): a LocalCluster of 2 worker processes,
a corrupt case, a worker killed in the middle of a case, a case that keeps killing its workers, a
hung case, Ctrl-C; labels bitwise those of the serial run.

Dask is a test requirement (CI installs sparseconv[test,cluster,mpi]): without it this module fails to
import, it is not skipped.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import distributed  # noqa: F401 - a missing Dask fails here, loudly
import pytest

from kidney import cli, cohort

REPO = Path(__file__).resolve().parents[2]


def _segment(src, out, weights, *extra) -> int:
    return cli.main(["segment", "-i", str(src), "-o", str(out), "--weights", str(weights), "--quiet", *extra])


def _outputs(out) -> list:
    return sorted(p.name for p in Path(out).iterdir() if p.name.endswith(".nii.gz"))


def test_cohort_with_a_corrupt_case_and_a_killed_worker(cohort_weights, make_cohort, tmp_path, monkeypatch,
                                                         capsys):
    """The whole promise: 6 good cases and a corrupt one on 2 worker processes, one worker killed
    (SIGKILL) in the middle of a case; all but the corrupt case done, the killed case retried on a
    worker and marked so, the corrupt one failed with its reason, labels bitwise the serial run's, the
    model loaded once per worker process."""
    data = make_cohort(tmp_path / "scans", n=6, corrupt=["c3b"])
    assert _segment(data, tmp_path / "serial", cohort_weights) == 1
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "c4").write_text("once")  # c4's first attempt kills its worker process
    monkeypatch.setenv(cohort.TEST_HOOK_ENV, str(hooks))
    capsys.readouterr()
    out = tmp_path / "dask"
    old = os.umask(0o022)
    try:
        code = _segment(data, out, cohort_weights, "--workers", "2", "--dashboard-address", ":0")
    finally:
        os.umask(old)
    text = capsys.readouterr()
    assert code == 1, text.out + text.err
    assert f"7 case(s) into {out}: 6 done, 1 failed, 0 skipped; 1 retried" in text.out
    assert "dask: LocalCluster, 2 worker process(es)" in text.out and "dashboard" in text.out
    rows = cohort.read_manifest(out)
    assert {k: r["status"] for k, r in rows.items()} == {**{f"c{i}": "done" for i in range(6)}, "c3b": "failed"}
    assert "not a readable NIfTI" in rows["c3b"]["error"] and rows["c3b"]["attempts"] == 1  # no retry
    killed = rows["c4"]
    assert killed["attempts"] == 2 and killed["retried"] is True and not (hooks / "c4").exists()
    assert len(killed["retry_reasons"]) == 1 and "died" in killed["retry_reasons"][0]
    assert all(not r["retried"] for k, r in rows.items() if k != "c4")
    done = [r for r in rows.values() if r["status"] == "done"]
    assert all(r["model_loads"] == 1 and r["worker"].startswith("tcp://") for r in done)
    assert len({r["pid"] for r in done}) >= 2  # the cases ran in more than one worker process
    assert _outputs(out) == _outputs(tmp_path / "serial") == [f"c{i}.nii.gz" for i in range(6)]
    for name in _outputs(out):  # the same bits as the serial run (and the umask's mode)
        assert (out / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
        assert os.stat(out / name).st_mode & 0o777 == 0o644
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert cohort.read_runs(out)[-1]["run"] == "finished" and cohort.read_runs(out)[-1]["retried"] == 1


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    """The test hook's folder, in the environment before any worker process starts."""
    folder = tmp_path / "hooks"
    folder.mkdir()
    monkeypatch.setenv(cohort.TEST_HOOK_ENV, str(folder))
    return folder


@pytest.fixture
def running_cluster(tmp_path, hooks):
    """A running LocalCluster (2 worker processes, a case may take down 1 worker before Dask gives
    it up) and its scheduler file, as a cluster someone else started."""
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster) as client:
                client.write_scheduler_file(str(tmp_path / "scheduler.json"))
                yield cluster, tmp_path / "scheduler.json"


def test_a_case_that_keeps_killing_workers_and_a_hung_case_fail(cohort_weights, make_cohort, tmp_path, hooks,
                                                                 running_cluster, capsys):
    """On a running cluster (--scheduler-file): c1 kills its worker on every attempt, c2 hangs past
    --timeout (10 s: room for a first case that loads the cached CPU kernels on a loaded machine); both are failed after the allowed attempts, the other cases are done."""
    _, scheduler_file = running_cluster
    data = make_cohort(tmp_path / "scans", n=6)
    (hooks / "c1").write_text("always")
    (hooks / "c2").write_text("hang")
    out = tmp_path / "out"
    code = _segment(data, out, cohort_weights, "--scheduler-file", str(scheduler_file), "--timeout", "10",
                    "--retries", "1")
    text = capsys.readouterr()
    assert code == 1, text.out + text.err
    assert "6 case(s) into" in text.out and "4 done, 2 failed" in text.out
    assert "joined tcp://" in text.out and "1 after a worker died" in text.out
    rows = cohort.read_manifest(out)
    assert {k: r["status"] for k, r in rows.items()} == {"c0": "done", "c1": "failed", "c2": "failed",
                                                         "c3": "done", "c4": "done", "c5": "done"}
    assert rows["c1"]["attempts"] == 2 and rows["c1"]["error"].startswith("its worker died on each of 2 attempt(s)")
    assert rows["c2"]["error"] == "its worker died on each of 2 attempt(s): timed out after 10 s; timed out after 10 s"
    assert _outputs(out) == ["c0.nii.gz", "c3.nii.gz", "c4.nii.gz", "c5.nii.gz"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_ctrl_c_stops_the_cluster_and_continue_finishes(cohort_weights, make_cohort, tmp_path, capsys,
                                                        takes_ctrl_c):
    """SIGINT to the process group of a ``--workers 2`` run (as Ctrl-C in a terminal) while c5
    hangs: the finished cases stay, the manifest says interrupted, no worker or temporary file is
    left; ``--continue`` segments only c5."""
    data = make_cohort(tmp_path / "scans", n=6)
    out = tmp_path / "out"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "c5").write_text("hang")
    env = dict(os.environ, **{cohort.TEST_HOOK_ENV: str(hooks)})
    proc = subprocess.Popen([sys.executable, "-m", "kidney", "segment", "-i", str(data), "-o", str(out),
                             "--weights", str(cohort_weights), "--quiet", "--workers", "2",
                             "--dashboard-address", "none"], cwd=REPO, env=env, start_new_session=True,
                            preexec_fn=takes_ctrl_c,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / cohort.MANIFEST).exists() and len(cohort.read_manifest(out)) == 5:
                break
            time.sleep(0.1)
        assert proc.poll() is None and len(cohort.read_manifest(out)) == 5
        os.killpg(proc.pid, signal.SIGINT)  # the driver and its workers, as a terminal does
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted: 5 done, 0 failed, 0 skipped, 1 left" in stdout
    assert cohort.read_runs(out)[-1]["run"] == "interrupted"
    assert _outputs(out) == [f"c{i}.nii.gz" for i in range(5)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    with pytest.raises(ProcessLookupError):  # no worker process outlives the run
        for _ in range(50):
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
    (hooks / "c5").unlink()
    assert _segment(data, out, cohort_weights, "--continue") == 0
    rows = cohort.read_manifest(out)
    assert rows["c5"]["status"] == "done" and sum(r["status"] == "skipped" for r in rows.values()) == 5
