"""Every teaching example runs in its smoke mode and writes its figures (in-process, into a tmp dir)."""
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

FIGURES = {
    "01_coordinates_and_hashing.py": ["01_key_bits.png", "01_probe_lengths.png", "01_neighbour_lookup.png"],
    "02_kernel_maps.py": ["02_rulebook_2d.png", "02_neighbour_table.png", "02_pair_counts.png"],
    "03_submanifold_vs_regular.py": ["03_active_set_growth.png", "03_cost.png"],
    "04_convolution_by_hand.py": ["04_by_hand.png"],
    "05_autograd_tour.py": ["05_autograd_graph.png"],
    "06_sparse_unet.py": ["06_unet_levels.png", "06_unet_memory.png"],
}


@pytest.fixture(autouse=True)
def isolated_global_state():
    """Examples seed the layer-init generator and may select backends: undo both afterwards."""
    from sparseconv import backends, init

    rng, current = init._rng, backends._current
    yield
    init._rng, backends._current = rng, current


def load(filename):
    spec = importlib.util.spec_from_file_location(f"example_{Path(filename).stem}", EXAMPLES / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# numbered examples that are backends (plugins of ``python -m sparseconv.verify``), not figures
BACKENDS = ["07_your_backend.py"]


def test_every_numbered_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("0[0-9]_*.py")) == sorted(list(FIGURES) + BACKENDS)


@pytest.mark.parametrize("filename", BACKENDS)
def test_backend_example_passes_verify(filename, capsys):
    from sparseconv import backends

    module = load(filename)
    try:
        assert module.main(["--quick"]) == 0
    finally:
        backends._registered.pop(module.backend.name, None)
    assert f"PASS: backend '{module.backend.name}' passes every op" in capsys.readouterr().out


@pytest.mark.parametrize("filename", sorted(FIGURES))
def test_example_smoke_run_writes_its_figures(filename, tmp_path, capsys):
    load(filename).main(["--smoke", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "figures written to" in printed
    for name in FIGURES[filename]:
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 5000, f"{filename} did not write {name}"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_broken_backend_example_reports_that_verify_caught_it(capsys):
    from sparseconv import backends

    try:
        assert load("broken_backend.py").main(["--quick"]) == 0
    finally:
        backends._registered.pop("broken", None)
    out = capsys.readouterr().out
    assert "FAIL: backend 'broken' fails depthwise" in out
    assert "As intended" in out
    sys.modules.pop("example_broken_backend", None)
