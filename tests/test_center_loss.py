import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from gluon_ssdcl import CenterLoss
from gluon_ssdcl.losses.center import class_histogram, sum_over_devices


def reference(x, labels, centers, mask=None, counts=None):
    """NumPy center loss: per-sample values and gradients w.r.t. features and centers."""
    num_classes = centers.shape[0]
    mask = np.ones(len(labels)) if mask is None else mask
    valid = (labels >= 0) & (labels < num_classes) & (mask > 0)
    if counts is None:
        counts = np.array([np.sum(valid & (labels == j)) for j in range(num_classes)], float)
    loss = np.zeros(len(labels))
    grad_x = np.zeros_like(x)
    grad_c = np.zeros_like(centers)
    for i in np.flatnonzero(valid):
        j = int(labels[i])
        diff = x[i] - centers[j]
        n = max(counts[j], 1.0)
        loss[i] = 0.5 * diff @ diff / n
        grad_x[i] = diff / n
        grad_c[j] -= diff / n
    return loss, grad_x, grad_c


def run(block, x, labels, *optional):
    x = nd.array(x)
    x.attach_grad()
    with autograd.record():
        loss = block(x, nd.array(labels), *[nd.array(o) for o in optional])
    loss.backward()
    return loss.asnumpy(), x.grad.asnumpy(), block.centers.weight.grad().asnumpy()


CASES = {
    'repeated_and_missing': (np.array([0, 2, 2, 2, 0, 4]), None),
    'masked': (np.array([1, 1, 3, 0, 3, 2]), np.array([1, 0, 1, 1, 1, 0])),
    'all_masked': (np.array([1, 2, 3, 0, 3, 2]), np.zeros(6)),
    'invalid_labels': (np.array([-1, 1, 5, 1, -2, 0]), None),
}


@pytest.mark.parametrize('hybridize', [False, True])
@pytest.mark.parametrize('case', sorted(CASES))
def test_value_and_gradients_match_numpy(case, hybridize):
    labels, mask = CASES[case]
    rng = np.random.RandomState(1)
    block = CenterLoss(num_classes=5, embed_dim=3)
    block.initialize(mx.init.Normal(1.0))
    if hybridize:
        block.hybridize()
    x = rng.randn(len(labels), 3)
    centers = block.centers.weight.data().asnumpy().astype(np.float64)
    args = () if mask is None else (mask,)
    loss, grad_x, grad_c = run(block, x, labels, *args)
    ref_loss, ref_gx, ref_gc = reference(x, labels, centers, mask)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_x, ref_gx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_c, ref_gc, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad_c))
    if case == 'all_masked':
        assert loss.sum() == 0 and not grad_x.any() and not grad_c.any()


def test_external_counts_normalise_the_loss():
    labels = np.array([0, 0, 1, 2])
    counts = np.array([4.0, 2.0, 0.0])  # e.g. counted over all devices
    rng = np.random.RandomState(2)
    block = CenterLoss(3, 2)
    block.initialize(mx.init.Normal(1.0))
    x = rng.randn(4, 2)
    loss, grad_x, grad_c = run(block, x, labels, np.ones(4), counts)
    centers = block.centers.weight.data().asnumpy()
    ref = reference(x, labels, centers, np.ones(4), counts)
    for got, want in zip((loss, grad_x, grad_c), ref):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sum_is_mean_per_class_of_half_squared_distance():
    """Hand-computed: class 0 at distances 1 and 3 from its center, class 1 at distance 2."""
    block = CenterLoss(2, 1)
    block.initialize(mx.init.Zero())
    loss = block(nd.array([[1.0], [3.0], [2.0]]), nd.array([0, 0, 1]))
    assert loss.sum().asscalar() == pytest.approx((0.5 + 4.5) / 2 + 2.0)


def test_class_histogram():
    labels = nd.array([0, 2, 2, -1, 7, 1])
    mask = nd.array([1, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(class_histogram(nd, labels, 3).asnumpy(), [1, 1, 2])
    np.testing.assert_array_equal(class_histogram(nd, labels, 3, mask).asnumpy(), [1, 1, 1])


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match='positive'):
        CenterLoss(0, 2)


class DenseCenterLoss(mx.gluon.HybridBlock):
    """The center loss as computed before the positives were selected: every one of the M
    samples looked up (``nn.Embedding``), its distance and its weight 1 / n_y (0 when dropped)."""

    def __init__(self, num_classes, embed_dim):
        super().__init__()
        self.num_classes = num_classes
        with self.name_scope():
            self.centers = mx.gluon.nn.Embedding(num_classes, embed_dim)

    def hybrid_forward(self, F, features, labels, mask, counts):  # pylint: disable=arguments-differ
        one_hot = F.broadcast_mul(F.one_hot(labels, self.num_classes), mask.reshape((-1, 1)))
        weight = F.dot(one_hot, 1.0 / F.maximum(counts, 1.0))
        distance = 0.5 * F.sum(F.square(features - self.centers(labels)), axis=1)
        return distance * weight


def dense_histogram(labels, mask, num_classes):
    return nd.sum(nd.one_hot(labels, num_classes) * mask.reshape((-1, 1)), axis=0)


def values_and_gradients(block, features, labels, mask, counts):
    """Per-sample loss, d(sum of the loss * w)/d features and d/d centers, w fixed weights."""
    features = features.copy()
    features.attach_grad()
    weights = nd.arange(features.shape[0], ctx=features.context) % 7 + 1
    with autograd.record():
        loss = block(features, labels, mask, counts)
        total = (loss * weights).sum()
    total.backward()
    return (loss.asnumpy(), features.grad.asnumpy(),
            block.centers.weight.grad(features.context).asnumpy())


# selected samples of 2000: none, a few (below the 16 rows computed at least), some, most, all
SELECTED = {'none': 0, 'few': 5, 'some': 100, 'most': 1800, 'all': 2000}


@pytest.mark.parametrize('hybridize', [False, True])
@pytest.mark.parametrize('selected', sorted(SELECTED))
@pytest.mark.parametrize('ctx', [[mx.cpu()], [mx.cpu(0), mx.cpu(1)]], ids=['one_ctx', 'two_ctx'])
def test_selected_rows_equal_the_dense_formula(ctx, selected, hybridize):
    """CenterLoss computes only the selected samples; values and gradients (features, centers)
    equal the dense formula over all M samples, per device, counts summed over the devices."""
    rng = np.random.RandomState(len(ctx) + SELECTED[selected])
    num_classes, dim, rows = 7, 16, 2000
    block, dense = CenterLoss(num_classes, dim), DenseCenterLoss(num_classes, dim)
    for b in (block, dense):
        b.initialize(mx.init.Normal(1.0), ctx=ctx)
        if hybridize:
            b.hybridize()
    dense.centers.weight.set_data(block.centers.weight.data(ctx[0]))
    parts = []
    for c in ctx:
        labels = rng.randint(-1, num_classes + 1, size=rows)  # some outside [0, C)
        mask = np.zeros(rows, np.float32)
        mask[rng.permutation(rows)[:SELECTED[selected]]] = 1
        parts.append((nd.array(rng.randn(rows, dim) * 3, ctx=c), nd.array(labels, ctx=c),
                      nd.array(mask, ctx=c)))
    histograms = [class_histogram(nd, labels, num_classes, mask) for _, labels, mask in parts]
    for (_, labels, mask), histogram in zip(parts, histograms):
        np.testing.assert_array_equal(histogram.asnumpy(),
                                      dense_histogram(labels, mask, num_classes).asnumpy())
    counts = sum_over_devices(histograms)
    for (features, labels, mask), count in zip(parts, counts):
        got = values_and_gradients(block, features, labels, mask, count)
        want = values_and_gradients(dense, features, labels, mask, count)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        assert (got[0] != 0).sum() <= mask.asnumpy().sum()
    if selected != 'none':
        assert np.abs(want[2]).sum() > 0
