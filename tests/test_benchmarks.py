"""The benchmark scripts run end to end in their smoke modes and write what they promise."""
import json
import subprocess
import sys
from pathlib import Path

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


def test_bench_network_quick(tmp_path):
    out = tmp_path / "net.json"
    subprocess.run([sys.executable, str(BENCH / "bench_network.py"), "--quick", "--methods", "sparse,dense",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    sparse = [r for r in result["rows"] if r["method"] == "sparse"]
    assert {r["input"] for r in sparse} == {"stage1", "stage2-median"}
    assert all("time_reduction_pct" in r and "memory_reduction_pct" in r for r in sparse)
    assert out.with_suffix(".png").stat().st_size > 1000
