"""kidney.widen and kidney.deepen: a wider network, or one with more levels, started from a trained one
computes the same function."""
from __future__ import annotations

import numpy as np
import pytest

from kidney.model import KidneyNet, ModelConfig, read_weights, save_weights
from kidney.deepen import deepen
from kidney.widen import widen
from sparseconv import SparseTensor

TINY = ModelConfig("tiny", (4, 8, 8), (1, 1, 1), decoder_depth=1, n_supervised=2)
TINY_X2 = ModelConfig("tiny-x2", (8, 16, 24), (1, 1, 1), decoder_depth=1, n_supervised=2)  # x2, x2, x3


def _trained_like(config, seed):
    """A network whose GRN γ/β are not zero (as after training), so every layer matters."""
    net = KidneyNet(config, seed=seed)
    rng = np.random.default_rng(seed)
    state = {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    return net.eval()


def _blob(seed=0, size=20):
    rng = np.random.default_rng(seed)
    grid = rng.random((size,) * 3) < 0.5
    sites = np.argwhere(grid)
    coords = np.concatenate([np.zeros((len(sites), 1), np.int64), sites], axis=1).astype(np.int32)
    return SparseTensor(coords, rng.standard_normal((len(sites), 1)).astype(np.float32), (size,) * 3)


def test_widened_network_computes_the_narrow_function():
    narrow = _trained_like(TINY, seed=1)
    wide = widen(narrow, TINY_X2, seed=0).eval()
    assert wide.num_parameters() > 2 * narrow.num_parameters()
    x = _blob()
    for a, b in zip(narrow(x), wide(x)):
        a, b = np.asarray(a.feats), np.asarray(b.feats)
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_a_stem_bias_can_be_added_and_starts_at_zero():
    narrow = _trained_like(TINY, seed=2)
    biased = ModelConfig("tiny-b", (4, 8, 8), (1, 1, 1), decoder_depth=1, n_supervised=2, stem_bias=True)
    grown = widen(narrow, biased, seed=0).eval()
    assert np.array_equal(grown.state_dict()["stem.0.bias"], np.zeros(4, np.float32))
    x = _blob(seed=3)
    for a, b in zip(narrow(x), grown(x)):
        np.testing.assert_array_equal(np.asarray(b.feats), np.asarray(a.feats))  # x·w + 0: the same bits
    with pytest.raises(ValueError, match="drop the stem's bias"):
        widen(grown, TINY)


@pytest.mark.parametrize("narrow, grown", [("compact", "wide"), ("compact", "compact-stem-bias"),
                                           ("wide", "wide-stem-bias"), ("compact", "wide-stem-bias"),
                                           ("wide-stem-bias", "wider-stem-bias")])
def test_the_shipped_configs_widen_into_each_other(narrow, grown):
    net = widen(KidneyNet(narrow, seed=0), grown, seed=0)
    assert net.config.name == grown


def test_copies_are_not_identical_so_training_can_separate_them():
    wide = widen(_trained_like(TINY, seed=1), TINY_X2, seed=0)
    w = wide.state_dict()["encoders.0.0.pwconv2.weight"]  # Linear (out 8, in 32): inputs are 2 copies of 16
    assert w.shape == (8, 32)
    first, second = w[:, :16], w[:, 16:]
    assert not np.allclose(first, second)
    narrow_w = _trained_like(TINY, seed=1).state_dict()["encoders.0.0.pwconv2.weight"]
    # the two shares of each narrow weight sum to it (its output row copied to rows j and j + 4)
    np.testing.assert_allclose(first + second, np.tile(narrow_w, (2, 1)), rtol=1e-5, atol=1e-6)


def test_widening_is_seeded():
    narrow = _trained_like(TINY, seed=1)
    a, b, c = (widen(narrow, TINY_X2, seed=s).state_dict() for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("other, message", [
    (ModelConfig("deeper", (8, 16, 24), (1, 2, 1), decoder_depth=1, n_supervised=2), "depths differs"),
    (ModelConfig("odd", (6, 16, 24), (1, 1, 1), decoder_depth=1, n_supervised=2), "multiple"),
])
def test_only_widths_may_change(other, message):
    with pytest.raises(ValueError, match=message):
        widen(KidneyNet(TINY, seed=0), other)


def test_trainer_starts_a_wide_model_from_compact_weights(tmp_path, tiny_phantom):
    from kidney import phantom
    from kidney.train import Trainer, TrainConfig, load_samples
    data = tmp_path / "data"
    phantom.write_dataset(data, 1, seed=11, preset="tiny")
    init = save_weights(KidneyNet("compact", seed=3), tmp_path / "compact.npz", {"stage": 1})
    cfg = TrainConfig(stage=1, model="wide", spacing=8.0, steps=1, accumulate=1, lr=1e-3, warmup_steps=1,
                      seed=5, init_weights=str(init), widen=True)
    trainer = Trainer(cfg, load_samples(data, cfg), tmp_path / "run", progress=False).run()
    state, meta = read_weights(trainer.export_weights())
    assert meta["config"]["name"] == "wide" and meta["train"]["widen"] is True
    assert state["stem.0.weight"].shape == (1, 1, 16)
    with pytest.raises(ValueError, match="widen needs init_weights"):
        TrainConfig(stage=1, model="wide", widen=True).resolved()


# --- deepen ---------------------------------------------------------------------------------------

TINY_DEEP = ModelConfig("tiny-deep", (4, 8, 8, 8, 8), (1, 1, 1, 2, 1), decoder_depth=1, n_supervised=2)


def test_deepened_network_computes_the_shallow_function_bit_for_bit():
    shallow = _trained_like(TINY, seed=1)
    deep = deepen(shallow, TINY_DEEP, seed=0).eval()
    assert deep.levels == 5 and deep.num_parameters() > shallow.num_parameters()
    x = _blob(size=24)  # 24 voxels a side: the 1/16 level still holds voxels
    for a, b in zip(shallow(x), deep(x)):
        np.testing.assert_array_equal(np.asarray(b.feats), np.asarray(a.feats))
    # the new levels are really on the path: with their way up no longer zero, the output changes
    state = deep.state_dict()
    state["ups.2.1.weight"] = np.full_like(state["ups.2.1.weight"], 0.05)
    deep.load_state_dict(state)
    assert not np.allclose(np.asarray(deep(x)[0].feats), np.asarray(shallow(x)[0].feats))


def test_deepening_is_seeded_and_keeps_the_old_weights():
    shallow = _trained_like(TINY, seed=1)
    a, b, c = (deepen(shallow, TINY_DEEP, seed=s).state_dict() for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    old = shallow.state_dict()
    assert all(np.array_equal(a[k], old[k]) for k in old)
    assert not a["ups.2.1.weight"].any() and not a["decoders.2.0.pwconv2.weight"].any()
    assert a["ups.2.0.weight"].any()  # the LayerNorm before the zero convolution keeps its scale


@pytest.mark.parametrize("other, message", [
    (ModelConfig("same", (4, 8, 8), (1, 1, 1), decoder_depth=1, n_supervised=2), "add more"),
    (ModelConfig("other-depths", (4, 8, 8, 8), (1, 2, 1, 1), decoder_depth=1, n_supervised=2), "add more"),
    (ModelConfig("biased", (4, 8, 8, 8), (1, 1, 1, 1), decoder_depth=1, n_supervised=2, stem_bias=True),
     "stem_bias differs"),
])
def test_only_levels_may_be_added(other, message):
    with pytest.raises(ValueError, match=message):
        deepen(KidneyNet(TINY, seed=0), other)


def test_trainer_deepens_and_the_new_levels_get_gradients_after_the_first_step(tmp_path):
    from kidney import phantom
    from kidney.train import Trainer, TrainConfig, load_samples, loss_and_dice
    data = tmp_path / "data"
    phantom.write_dataset(data, 1, seed=11, preset="tiny")
    init = save_weights(KidneyNet("wide-stem-bias", seed=3), tmp_path / "wide.npz", {"stage": 1})
    cfg = TrainConfig(stage=1, model="deep-stem-bias", spacing=4.0, steps=1, accumulate=1, lr=1e-3,
                      warmup_steps=1, seed=5, init_weights=str(init), deepen=True, augment=False)
    trainer = Trainer(cfg, load_samples(data, cfg), tmp_path / "run", progress=False)
    _, x, t = trainer.draw(0)
    new = "encoders.4.0.pwconv1.weight"

    def grad_of_new_level():
        trainer.model.zero_grad()
        loss, _ = loss_and_dice(trainer.model, x, t, cfg.ds_weights, cfg.loss)
        loss.backward()
        return dict(trainer.model.named_parameters())[new].grad

    g = grad_of_new_level()
    assert g is None or not np.asarray(g).any()  # its way up starts at zero
    trainer.run()
    assert np.asarray(grad_of_new_level()).any()
    state, meta = read_weights(trainer.export_weights())
    assert meta["config"]["name"] == "deep-stem-bias" and meta["train"]["deepen"] is True
    with pytest.raises(ValueError, match="deepen needs init_weights"):
        TrainConfig(stage=1, model="deep-stem-bias", deepen=True).resolved()
