"""The dense twin runs the same weights on the whole grid; masked, it equals the sparse network."""
import numpy as np
import pytest

from sparseconv import SparseTensor
from sparseconv.autograd import no_grad
from kidney.dense_twin import DenseKidneyNet
from kidney.model import KidneyNet


def _perturbed(config, rng):
    """A model whose every parameter (GRN γ/β and biases too, which init to 0) is non-zero."""
    model = KidneyNet(config, seed=1)
    state = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("config, shape", [("tiny", (13, 10, 11)), ("compact", (12, 9, 7))])
def test_masked_dense_twin_equals_sparse_network_at_active_sites(config, shape):
    rng = np.random.default_rng(0)
    model = _perturbed(config, rng)
    mask = rng.random((1,) + shape) < 0.3
    coords = np.argwhere(mask).astype(np.int32)
    x = SparseTensor(coords, rng.standard_normal((len(coords), 1)).astype(np.float32), shape)
    levels = len(model.config.dims) - 1
    with no_grad():
        sparse_out = model(x, n_outputs=levels)
    dense_out = DenseKidneyNet(model)(x.dense(), mask=mask, n_outputs=levels)
    for s, d in zip(sparse_out, dense_out):
        b, z, y, xx = s.coords.T
        want = np.asarray(s.feats)
        assert d.shape[2:] == s.spatial_shape
        assert np.abs(d[b, :, z, y, xx] - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_unmasked_dense_twin_fills_the_grid():
    rng = np.random.default_rng(1)
    model = _perturbed("tiny", rng)
    x = np.zeros((1, 1, 6, 6, 6), np.float32)
    x[0, 0, 3, 3, 3] = 1.0
    out = DenseKidneyNet(model)(x)[0]
    assert out.shape == (1, 3, 6, 6, 6)
    assert np.count_nonzero(out[0, 0]) > 1  # a dense network computes (and spends time) everywhere
