"""The autograd core: fan-out accumulation, no_grad, leaves across graphs, deep graphs, empty tensors."""
import numpy as np
import pytest

import sparseconv
from sparseconv import SparseTensor, Tensor, functional as F, nn, no_grad
from sparseconv.autograd import Function, gradcheck


def leaf(a):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def test_fan_out_accumulates():
    x = leaf([1.0, -2.0, 3.0])
    y = x * x + x * 3.0 + x  # x feeds four uses
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 4.0)


def test_diamond_graph_each_node_once():
    x = leaf([2.0])
    a = x * 2.0
    b = a * a  # a is used twice; x reached through both branches of a diamond
    c = a + b
    c.sum().backward()  # dc/dx = 2 + 2a·2 = 2 + 8x
    np.testing.assert_allclose(x.grad, [2 + 8 * 2.0])


def test_index_repeated_rows_accumulate():
    x = leaf(np.arange(6.0).reshape(3, 2))
    y = x[np.array([0, 2, 0, 0])]
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [[3, 3], [0, 0], [1, 1]])


def test_leaf_grads_accumulate_across_fresh_graphs():
    x = leaf([1.0, 2.0])
    for _ in range(3):
        (x * x).sum().backward()  # a fresh graph each time; .grad sums until zeroed
    np.testing.assert_allclose(x.grad, 3 * 2 * x.data)
    x.grad = None
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])


def test_no_grad_records_nothing():
    x = leaf([1.0])
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    z = x * 2.0  # recording is back on after the block
    assert z.requires_grad


def test_backward_needs_scalar_or_grad():
    x = leaf([1.0, 2.0])
    y = x * 2.0
    with pytest.raises(RuntimeError, match="one-element"):
        y.backward()
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [2.0, 20.0])


def test_deep_chain_no_recursion_limit():
    x = leaf([1.0])
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_ndarray_on_the_left_defers_to_tensor():
    x = leaf([1.0, 2.0])
    y = np.array([3.0, 4.0]) * x + np.array([1.0, 1.0])
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 4.0])


def test_basic_ops_gradcheck():
    rng = np.random.default_rng(0)
    a, b = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal((1, 4)))
    gradcheck(lambda: ((a - b) * a + (-b)).reshape(4, 3)[1:] / 3.0, [a, b])
    gradcheck(lambda: (a * b).sum(axis=0) + a.mean(axis=1).sum(), [a, b])


def test_custom_function_and_wrong_gradient_count():
    class Square(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            return 2 * ctx.saved[0] * grad

    class Broken(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x + y

        @staticmethod
        def backward(ctx, grad):
            return grad

    x = leaf([3.0])
    Square.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0])
    with pytest.raises(RuntimeError, match="returned 1 gradients for 2 inputs"):
        Broken.apply(x, leaf([1.0])).sum().backward()


def test_sparse_tensor_rows_reordered_through_the_graph():
    coords = np.array([[0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 1, 0]], np.int32)  # not canonical
    feats = leaf(np.array([[1.0], [2.0], [3.0]]))
    x = SparseTensor(coords, feats, (2, 2, 2))
    np.testing.assert_array_equal(x.feats[:, 0], [2.0, 3.0, 1.0])
    (x.feats_tensor * np.array([[10.0], [20.0], [30.0]])).sum().backward()
    np.testing.assert_allclose(feats.grad[:, 0], [30.0, 10.0, 20.0])  # back to the user's rows


def _empty(channels, shape=(4, 4, 4)):
    return SparseTensor(np.zeros((0, 4), np.int32), np.zeros((0, channels)), shape, batch_size=1)


def test_zero_row_graph():
    sparseconv.manual_seed(0)
    net = nn.Sequential(nn.SubMConv3d(2, 4, 3), nn.LayerNorm(4), nn.GELU(), nn.GRN(4),
                        nn.DepthwiseSubMConv3d(4), nn.BatchNorm(4), nn.Linear(4, 4),
                        nn.SparseConv3d(4, 6, 2, 2), nn.SparseInverseConv3d(6, 3, 2)).astype(np.float64)
    x0 = _empty(2)
    feats = leaf(np.zeros((0, 2)))
    x = x0.replace_feats(feats)
    y = net(x)
    assert y.feats.shape == (0, 3) and len(y) == 0
    loss = F.soft_dice_loss(y, np.zeros((0, 3))) + y.feats_tensor.sum()
    loss.backward()
    assert feats.grad.shape == (0, 2)
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        assert not np.any(p.grad), name  # nothing flowed: all zeros
    assert np.isfinite(loss.item())
    pooled = F.avg_pool(x)
    assert pooled.feats.shape == (0, 2)


def test_graph_is_freed_after_backward_unless_retained():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # the retained graph can be walked again
    np.testing.assert_allclose(x.grad, 2 * 2 * x.data)
    with pytest.raises(RuntimeError, match="a second time"):
        y.backward()
