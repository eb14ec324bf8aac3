"""kidney.model: the paper's parameter count, outputs, HEC <-> labels, weights files."""
from __future__ import annotations

import numpy as np
import pytest

from sparseconv import SparseTensor
from kidney.model import (CONFIGS, PAPER_PARAMETERS, KidneyNet, WeightsError, hec_targets, labels_from_hecs,
                          load_weights, save_weights)


def test_paper_config_has_the_papers_parameter_count():
    model = KidneyNet("paper")
    assert model.num_parameters() == PAPER_PARAMETERS == 27_473_696
    assert model.config.dims == (16, 32, 64, 128, 256, 512)
    assert model.config.depths == (2, 4, 4, 8, 8, 8)
    assert len(model.heads) == 5 and model.config.n_supervised == 3 and model.config.out_channels == 3
    w = model.encoders[3][0].pwconv1.weight.data  # N(0, 0.02²) truncated at ±2 std: sd 0.88 · 0.02
    assert 0.0165 < float(w.std()) < 0.0187 and float(np.abs(w).max()) <= 0.04 + 1e-7
    assert not model.downs[0][1].bias.data.any()


def test_compact_is_much_smaller():
    assert KidneyNet("compact").num_parameters() < 500_000


def _random_sparse(n=300, shape=(12, 14, 16), seed=0):
    rng = np.random.default_rng(seed)
    flat = rng.choice(np.prod(shape), n, replace=False)
    zyx = np.stack(np.unravel_index(flat, shape), 1)
    coords = np.concatenate([np.zeros((n, 1), int), zyx], 1).astype(np.int32)
    return SparseTensor(coords, rng.standard_normal((n, 1)).astype(np.float32), shape)


def test_forward_gives_logits_at_1_half_quarter():
    x = _random_sparse()
    model = KidneyNet(CONFIGS["compact"])
    outs = model(x)
    assert len(outs) == 3
    assert np.array_equal(outs[0].coords, x.coords) and outs[0].num_channels == 3
    assert outs[1].stride == (2, 2, 2) and outs[2].stride == (4, 4, 4)
    assert len(model(x, n_outputs=1)) == 1


def test_same_seed_same_weights():
    a, b = KidneyNet("tiny", seed=3).state_dict(), KidneyNet("tiny", seed=3).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_hec_targets_and_labels_round_trip():
    labels = np.array([0, 1, 2, 3, 1, 2], np.uint8)
    t = hec_targets(labels)
    assert t.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert np.array_equal(labels_from_hecs(t[:, 0], t[:, 1], t[:, 2]), labels)
    # masses/tumour outside kidney+masses are ignored; tumour overwrites masses
    assert labels_from_hecs([0, 1, 1], [1, 1, 0], [1, 1, 1]).tolist() == [0, 2, 2]


def test_weights_round_trip_and_clear_errors(tmp_path):
    model = KidneyNet("tiny", seed=1)
    path = save_weights(model, tmp_path / "w.npz", {"stage": 1, "spacing_mm": 3.98})
    loaded, meta = load_weights(path)
    assert meta["stage"] == 1 and meta["config"]["name"] == "tiny"
    assert all(np.array_equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())

    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="not a readable"):
        load_weights(corrupt)
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(path, KidneyNet("compact"))
    np.savez(tmp_path / "nometa.npz", **model.state_dict())
    with pytest.raises(WeightsError, match="no model config"):
        load_weights(tmp_path / "nometa.npz")
