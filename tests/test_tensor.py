"""SparseTensor: validation with named rows, canonical order, dense round trips, key packing."""
import numpy as np
import pytest

from sparseconv import SparseTensor, Tensor, no_grad
from sparseconv import coords as C
from sparseconv import functional as F


def _coords(*rows):
    return np.array(rows, dtype=np.int32)


def test_rows_come_out_in_canonical_order_with_their_features():
    coords = _coords([1, 0, 0, 0], [0, 2, 1, 1], [0, 0, 3, 2], [0, 2, 1, 0])
    feats = np.arange(8, dtype=np.float32).reshape(4, 2)
    x = SparseTensor(coords, feats, (3, 4, 5))
    assert x.coords.tolist() == [[0, 0, 3, 2], [0, 2, 1, 0], [0, 2, 1, 1], [1, 0, 0, 0]]
    assert x.feats[:, 0].tolist() == [4, 6, 2, 0]
    assert x.batch_size == 2 and x.coords.dtype == np.int32
    assert np.all(np.diff(x.keys) > 0)


@pytest.mark.parametrize("coords, message", [
    (_coords([0, 1, 1, 1], [0, -1, 0, 0]), "row 1 = [0, -1, 0, 0]: z=-1"),
    (_coords([0, 1, 1, 1], [0, 0, 4, 0]), "row 1 = [0, 0, 4, 0]: y=4 is outside [0, 4)"),
    (_coords([0, 0, 0, 5]), "row 0 = [0, 0, 0, 5]: x=5"),
    (_coords([0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 2, 3]), "row 2 = [0, 1, 2, 3] duplicates row 0"),
])
def test_bad_coords_name_the_row(coords, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        SparseTensor(coords, np.zeros((len(coords), 1), np.float32), (3, 4, 5))


def test_batch_index_beyond_batch_size_is_named():
    with pytest.raises(ValueError, match=r"row 1 = \[2, 0, 0, 0\]: batch=2 is outside \[0, 2\)"):
        SparseTensor(_coords([0, 0, 0, 0], [2, 0, 0, 0]), np.zeros((2, 1), np.float32), (3, 4, 5), batch_size=2)


@pytest.mark.parametrize("coords, feats, message", [
    (np.zeros((2, 4), np.float32), np.zeros((2, 1), np.float32), "integer array, got dtype float32"),
    (np.zeros((2, 3), np.int32), np.zeros((2, 1), np.float32), r"shape \(N, 4\)"),
    (_coords([0, 0, 0, 0]), np.zeros((1, 1), np.int64), "float32 or float64, got dtype int64"),
    (_coords([0, 0, 0, 0]), np.zeros((2, 1), np.float32), r"shape \(N=1, C\)"),
    (_coords([0, 0, 0, 0], [0, 0, 0, 1]), np.array([[0.0], [np.nan]], np.float32), "row 1, channel 0 is not finite: nan"),
])
def test_bad_dtypes_shapes_and_values_are_refused(coords, feats, message):
    with pytest.raises(ValueError, match=message):
        SparseTensor(coords, feats, (3, 4, 5))


def test_spatial_shape_and_key_packing_limits():
    with pytest.raises(ValueError, match=r"spatial_shape W=65537 is outside \[1, 65536\]"):
        SparseTensor(np.zeros((0, 4), np.int32), np.zeros((0, 1), np.float32), (4, 4, 65537))
    with pytest.raises(ValueError, match="batch_size=40000"):
        SparseTensor(np.zeros((0, 4), np.int32), np.zeros((0, 1), np.float32), (4, 4, 4), batch_size=40000)
    big = _coords([C.MAX_BATCH - 1, 65535, 65535, 65535], [0, 0, 0, 0])
    keys = C.pack_keys(big)
    assert keys[0] > keys[1] >= 0  # no sign overflow at the largest coordinate
    assert np.array_equal(C.unpack_keys(keys), big)


def test_dense_round_trip_and_mask():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    dense[rng.random((2, 1, 4, 5, 6)).repeat(3, axis=1) < 0.6] = 0
    x = SparseTensor.from_dense(dense)
    assert np.array_equal(x.dense(), dense)
    mask = np.zeros((2, 4, 5, 6), bool)
    mask[1, 3, 4, 5] = True
    y = SparseTensor.from_dense(dense, mask=mask)
    assert y.coords.tolist() == [[1, 3, 4, 5]] and np.array_equal(y.feats[0], dense[1, :, 3, 4, 5])


def test_empty_tensor():
    x = SparseTensor(np.zeros((0, 4), np.int32), np.zeros((0, 2), np.float64), (2, 2, 2))
    assert len(x) == 0 and x.batch_size == 1 and x.dense().shape == (1, 2, 2, 2, 2)


def test_replace_feats_shares_sites_and_cache():
    x = SparseTensor(_coords([0, 0, 0, 0], [0, 1, 1, 1]), np.ones((2, 1), np.float32), (2, 2, 2))
    y = x.replace_feats(np.zeros((2, 5), np.float32))
    assert y.cache is x.cache and y.same_sites(x) and y.num_channels == 5
    with pytest.raises(ValueError, match=r"need \(2, C\)"):
        x.replace_feats(np.zeros((3, 1), np.float32))


def test_feats_is_always_an_array_and_feats_tensor_its_autograd_side():
    coords = _coords([0, 1, 1, 1], [0, 0, 0, 0])  # not canonical: rows are reordered
    data = np.array([[1.0, -2.0], [3.0, -4.0]])
    leaf = Tensor(data.copy(), requires_grad=True)
    weight = Tensor(np.ones((1, 2, 2)), requires_grad=True)
    made = [SparseTensor(coords, data, (2, 2, 2)),              # from an array
            SparseTensor(coords, leaf, (2, 2, 2)),              # from a leaf (reordered through the graph)
            F.relu(SparseTensor(coords, data, (2, 2, 2))),      # by an op
            F.subm_conv3d(SparseTensor(coords, leaf, (2, 2, 2)), weight, kernel_size=1)]
    with no_grad():
        made.append(F.subm_conv3d(SparseTensor(coords, data, (2, 2, 2)), weight, kernel_size=1))
    for x in made:
        assert type(x.feats) is np.ndarray and x.feats.shape == (2, 2)
        assert isinstance(x.feats_tensor, Tensor) and x.feats_tensor.data is x.feats
    np.testing.assert_array_equal(made[0].feats, data[::-1])
    assert [x.feats_tensor.requires_grad for x in made] == [False, True, False, True, False]
    made[3].feats_tensor.sum().backward()  # through the op and the reordering, back to the leaf's rows
    np.testing.assert_array_equal(leaf.grad, np.full((2, 2), 2.0))
