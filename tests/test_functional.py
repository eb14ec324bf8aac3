"""Every autograd Function against float64 central finite differences, and the functional API's
site handling (identical-site checks, coarse/fine sites, dropout, losses)."""
import numpy as np
import pytest

import sparseconv
from sparseconv import SparseTensor, Tensor, functional as F, no_grad
from sparseconv.autograd import gradcheck


def random_sparse(rng, shape=(5, 6, 5), batch=2, channels=3, density=0.3, dtype=np.float64):
    mask = rng.random((batch,) + tuple(shape)) < density
    coords = np.argwhere(mask).astype(np.int32)
    feats = rng.standard_normal((len(coords), channels)).astype(dtype)
    return SparseTensor(coords, feats, shape, batch_size=batch)


def leaf(a):
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def x(rng):
    return random_sparse(rng)


def with_leaf_feats(x):
    f = leaf(x.feats)
    return x.replace_feats(f), f


# --- convolutions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dilation", [1, 2])
def test_subm_conv_grad(x, rng, dilation):
    xs, f = with_leaf_feats(x)
    w, b = leaf(rng.standard_normal((27, 3, 2))), leaf(rng.standard_normal(2))
    gradcheck(lambda: F.subm_conv3d(xs, w, b, dilation=dilation), [f, w, b], max_per_tensor=40)


def test_subm_conv_without_bias_and_first_layer_skip(x, rng):
    w = leaf(rng.standard_normal((27, 3, 2)))
    gradcheck(lambda: F.subm_conv3d(x, w), [w], max_per_tensor=40)  # feats are constants here


@pytest.mark.parametrize("depthwise", [False, True])
def test_backward_without_bias_skips_only_the_bias_gradient(x, rng, depthwise):
    from sparseconv.functional import conv as C
    from sparseconv.kmap import submanifold_map
    kmap = submanifold_map(x, 3)
    weight = rng.standard_normal((27, 3) if depthwise else (27, 3, 2))
    grad = rng.standard_normal((len(x), 3 if depthwise else 2))
    backward = C.depthwise_backward if depthwise else C.conv_backward
    dx, dw, db = backward(grad, x.feats, weight, kmap)
    dx0, dw0, db0 = backward(grad, x.feats, weight, kmap, bias=False)
    assert db0 is None and np.array_equal(db, grad.sum(axis=0))
    assert np.array_equal(dx, dx0) and np.array_equal(dw, dw0)
    no_dx, dw1, db1 = backward(grad, x.feats, weight, kmap, input_grad=False)  # the first layer's case
    assert no_dx is None and np.array_equal(dw1, dw) and np.array_equal(db1, db)


def test_depthwise_conv_grad(x, rng):
    xs, f = with_leaf_feats(x)
    w, b = leaf(rng.standard_normal((27, 3))), leaf(rng.standard_normal(3))
    gradcheck(lambda: F.depthwise_subm_conv3d(xs, w, b), [f, w, b], max_per_tensor=40)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_down_conv_grad(x, rng, k, s, p):
    xs, f = with_leaf_feats(x)
    w, b = leaf(rng.standard_normal((k ** 3, 3, 2))), leaf(rng.standard_normal(2))
    y = F.sparse_conv3d(xs, w, b, k, s, p)
    assert y.stride == tuple(v * s for v in x.stride)
    gradcheck(lambda: F.sparse_conv3d(xs, w, b, k, s, p), [f, w, b], max_per_tensor=40)


def test_inverse_conv_grad_returns_to_fine_sites(x, rng):
    w_down = rng.standard_normal((8, 3, 4))
    coarse = F.sparse_conv3d(x, w_down, None, 2, 2)
    cs, f = with_leaf_feats(coarse)
    w, b = leaf(rng.standard_normal((8, 4, 3))), leaf(rng.standard_normal(3))
    y = F.sparse_inverse_conv3d(cs, w, b)
    assert y.same_sites(x) and y.cache is x.cache  # back on the very same fine sites and cache
    gradcheck(lambda: F.sparse_inverse_conv3d(cs, w, b), [f, w, b], max_per_tensor=40)


def test_inverse_conv_needs_a_down_conv(x, rng):
    with pytest.raises(ValueError, match="not produced by a down conv"):
        F.sparse_inverse_conv3d(x, rng.standard_normal((8, 3, 3)))


# --- pointwise ------------------------------------------------------------------------------------

def test_linear_grad(x, rng):
    xs, f = with_leaf_feats(x)
    w, b = leaf(rng.standard_normal((4, 3))), leaf(rng.standard_normal(4))
    gradcheck(lambda: F.linear(xs, w, b), [f, w, b])
    gradcheck(lambda: F.linear(f, w), [f, w])  # plain tensors work too


def test_layer_norm_grad(x, rng):
    xs, f = with_leaf_feats(x)
    w, b = leaf(rng.standard_normal(3)), leaf(rng.standard_normal(3))
    gradcheck(lambda: F.layer_norm(xs, w, b, eps=1e-6), [f, w, b])
    gradcheck(lambda: F.layer_norm(xs), [f])


def test_batch_norm_grad_train_and_eval(x, rng):
    xs, f = with_leaf_feats(x)
    w, b = leaf(rng.standard_normal(3)), leaf(rng.standard_normal(3))
    gradcheck(lambda: F.batch_norm(xs, w, b, training=True), [f, w, b])
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    gradcheck(lambda: F.batch_norm(xs, w, b, rm, rv, training=False), [f, w, b])


@pytest.mark.parametrize("name", ["gelu", "relu", "leaky_relu", "sigmoid"])
def test_activation_grads(x, name):
    xs, f = with_leaf_feats(x)
    f.data[np.abs(f.data) < 1e-3] = 0.5  # keep finite differences away from ReLU's kink
    fn = getattr(F, name)
    gradcheck(lambda: fn(xs), [f])


def test_grn_grad_per_sample(rng):
    x = random_sparse(rng, batch=3, channels=4)
    xs, f = with_leaf_feats(x)
    g, b = leaf(rng.standard_normal(4)), leaf(rng.standard_normal(4))
    gradcheck(lambda: F.grn(xs, g, b), [f, g, b])


def test_grn_with_an_empty_sample_and_a_zero_channel(rng):
    coords = np.array([[0, 0, 0, 0], [0, 1, 0, 0], [2, 0, 1, 1], [2, 1, 1, 1], [2, 1, 1, 0]], np.int32)
    feats = rng.standard_normal((5, 3))
    feats[:, 1] = np.where(coords[:, 0] == 0, 0.0, feats[:, 1])  # sample 0: channel 1 all zero (G = 0)
    x = SparseTensor(coords, feats, (2, 2, 2), batch_size=3)  # sample 1 has no voxels
    xs, f = with_leaf_feats(x)
    g, b = leaf(rng.standard_normal(3)), leaf(rng.standard_normal(3))
    y = F.grn(xs, g, b)
    assert np.all(np.isfinite(y.feats))
    # at G = 0 the norm has a symmetric kink: central differences and the analytic rule (0) agree
    gradcheck(lambda: F.grn(xs, g, b), [f, g, b])


def test_avg_pool_grad(x):
    xs, f = with_leaf_feats(x)
    gradcheck(lambda: F.avg_pool(xs), [f])
    gradcheck(lambda: F.avg_pool(xs, 3, 2, 1), [f])


def test_add_and_cat_grads(x, rng):
    xs, f = with_leaf_feats(x)
    other = leaf(rng.standard_normal(f.shape))
    ys = x.replace_feats(other)
    gradcheck(lambda: F.add(xs, ys), [f, other])
    gradcheck(lambda: F.cat([xs, ys, xs]), [f, other])


def test_add_and_cat_refuse_different_sites(x, rng):
    y = random_sparse(rng)
    with pytest.raises(ValueError, match="identical sites"):
        F.add(x, y)
    with pytest.raises(ValueError, match="identical sites"):
        F.cat([x, y])
    # same coordinates built independently (different caches) are accepted
    twin = SparseTensor(x.coords, x.feats.copy(), x.spatial_shape, x.batch_size)
    np.testing.assert_allclose(F.add(x, twin).feats, 2 * x.feats)


def test_dropout(x):
    xs, f = with_leaf_feats(x)
    same = F.dropout(xs, 0.5, training=False)
    assert same is xs
    y = F.dropout(xs, 0.25, training=True, rng=np.random.default_rng(0))
    kept = y.feats != 0
    np.testing.assert_allclose(y.feats[kept], f.data[kept] / 0.75)
    assert 0.5 < kept.mean() < 0.95
    y.feats_tensor.sum().backward()
    np.testing.assert_allclose(f.grad, kept / 0.75)
    with pytest.raises(ValueError):
        F.dropout(xs, 1.0)


# --- losses ---------------------------------------------------------------------------------------

def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_soft_dice_value_and_grad(x, rng):
    z = x.replace_feats(x.feats[:, :2])
    target = (rng.random((len(x), 2)) < 0.4).astype(np.float64)
    loss = F.soft_dice_loss(z, target, smooth=1e-5)
    expect = 0.0
    for c in range(2):
        per_sample = []
        for s in range(x.batch_size):
            rows = x.coords[:, 0] == s
            p, t = _sigmoid(z.feats[rows, c]), target[rows, c]
            per_sample.append(1 - (2 * (p * t).sum() + 1e-5) / (p.sum() + t.sum() + 1e-5))
        expect += np.mean(per_sample)
    np.testing.assert_allclose(loss.item(), expect, rtol=1e-12)
    zs, f = with_leaf_feats(z)
    gradcheck(lambda: F.soft_dice_loss(zs, target), [f])
    gradcheck(lambda: F.soft_dice_loss(zs, target * 0.5, batch_dice=True), [f])  # soft targets


def test_bce_with_logits_value_and_grad(rng):
    z = leaf(rng.standard_normal((20, 3)) * 4)
    t = rng.random((20, 3))
    p = _sigmoid(z.data)
    np.testing.assert_allclose(F.bce_with_logits(z, t).item(),
                               np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))), rtol=1e-10)
    pw = np.array([1.0, 2.0, 0.5])
    np.testing.assert_allclose(F.bce_with_logits(z, t, pos_weight=pw).item(),
                               np.mean(-(pw * t * np.log(p) + (1 - t) * np.log(1 - p))), rtol=1e-10)
    gradcheck(lambda: F.bce_with_logits(z, t), [z])
    gradcheck(lambda: F.bce_with_logits(z, t, pos_weight=pw), [z])
    big = F.bce_with_logits(np.array([[1000.0, -1000.0]]), np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(big.item(), 1000.0)  # stable for huge logits


@pytest.mark.parametrize("k", [0.1, 0.25, 1.0])
def test_topk_bce_with_logits_value_and_grad(rng, k):
    z = leaf(rng.standard_normal((40, 3)) * 4)
    t = (rng.random((40, 3)) > 0.5).astype(float)
    p = _sigmoid(z.data)
    rows = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(axis=1)
    m = max(1, int(40 * k))
    expect = np.sort(rows)[-m:].mean()  # the m hardest rows, by a full sort
    loss = F.topk_bce_with_logits(z, t, k=k)
    np.testing.assert_allclose(loss.item(), expect, rtol=1e-10)
    gradcheck(lambda: F.topk_bce_with_logits(z, t, k=k), [z])
    z.grad = None
    F.topk_bce_with_logits(z, t, k=k).backward()
    hard = rows >= np.sort(rows)[-m]
    assert np.all(z.grad[~hard] == 0) and np.all(np.abs(z.grad[hard]).sum(axis=1) > 0)
    if k == 1.0:  # every row: BCE's mean over elements times the channel count
        np.testing.assert_allclose(loss.item(), 3 * F.bce_with_logits(z, t).item(), rtol=1e-12)


def test_topk_bce_with_logits_rejects_bad_k_and_takes_empty_input():
    for k in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="k must lie in"):
            F.topk_bce_with_logits(np.zeros((4, 3)), np.zeros((4, 3)), k=k)
    assert F.topk_bce_with_logits(np.zeros((0, 3)), np.zeros((0, 3))).item() == 0.0


def test_cross_entropy_value_and_grad(rng):
    z = leaf(rng.standard_normal((12, 4)) * 3)
    labels = rng.integers(0, 4, 12)
    labels[3] = -100
    weight = np.array([1.0, 2.0, 0.5, 1.5])
    logp = z.data - np.log(np.exp(z.data).sum(axis=1, keepdims=True))
    valid = labels != -100
    w = weight[labels[valid]]
    expect = -(w * logp[valid, labels[valid]]).sum() / w.sum()
    np.testing.assert_allclose(F.cross_entropy(z, labels, weight=weight).item(), expect, rtol=1e-12)
    gradcheck(lambda: F.cross_entropy(z, labels), [z])
    gradcheck(lambda: F.cross_entropy(z, labels, weight=weight), [z])


def test_dice_score():
    pred = np.array([[1, 0], [1, 0], [0, 0]], bool)
    true = np.array([[1, 0], [0, 0], [0, 0]], bool)
    np.testing.assert_allclose(F.dice_score(pred, true), [2 / 3, 1.0])


def test_dice_score_counts_like_the_plain_sums(rng):
    """The per-channel counting of (N, C) rows gives what the column sums give, bit for bit, on
    strided views and with no rows; other shapes keep the sums over the first axis."""
    pred, true = rng.random((5000, 4)) > 0.3, rng.random((5000, 4)) > 0.6

    def plain(p, t):
        p, t = np.asarray(p, bool), np.asarray(t, bool)
        total = p.sum(axis=0) + t.sum(axis=0)
        return np.where(total > 0, 2.0 * (p & t).sum(axis=0) / np.maximum(total, 1), 1.0)

    for p, t in ((pred, true), (pred[::3, ::2], true[::3, ::2]), (pred[:0], true[:0]), (pred[:, 0], true[:, 0]),
                 (pred.astype(np.float32), true)):
        got, want = F.dice_score(p, t), plain(p, t)
        assert np.shape(got) == np.shape(want) and np.array_equal(got, want)


def test_functional_runs_under_the_reference_backend_too(x, rng):
    w = rng.standard_normal((27, 3, 2))
    with sparseconv.use_backend("reference"):
        ref = F.subm_conv3d(random_sparse(np.random.default_rng(7)), w).feats
    got = F.subm_conv3d(random_sparse(np.random.default_rng(7)), w).feats
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    with no_grad():
        assert not F.gelu(x.replace_feats(leaf(x.feats))).feats_tensor.requires_grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_array_is_the_two_branch_stable_form_bit_for_bit(dtype):
    """1 / (1 + e) above 0 and e / (1 + e) below (e = exp(-|x|)), value for value, in the input's
    dtype, without overflow warnings at the extremes."""
    import warnings
    from sparseconv.functional.activation import sigmoid_array
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(20000) * s for s in (1, 10, 100)]
                       + [np.array([0.0, -0.0, 1e-45, -1e-45, 88.7, -88.7, 1e30, -1e30])]).astype(dtype)
    e = np.exp(-np.abs(x))
    want = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = sigmoid_array(x)
    assert got.dtype == dtype
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    assert got[-2] == 1.0 and got[-1] == 0.0
