from types import SimpleNamespace

import mxnet as mx
import numpy as np
import pytest
from gluoncv.loss import SSDMultiBoxLoss
from mxnet import autograd, gluon, nd
from test_center_loss import reference

from gluon_ssdcl import Mode, MultiBoxCenterLoss

B, N, C, D = 4, 60, 3, 2
CTX2 = [mx.cpu(0), mx.cpu(1)]


def random_batch(seed, positives=True):
    rng = np.random.RandomState(seed)
    choices = [-1, 0, 0, 0, 0, 1, 2, 3] if positives else [-1, 0]
    return (rng.randn(B, N, C + 1), rng.randn(B, N, 4), rng.choice(choices, size=(B, N)),
            rng.randn(B, N, 4), rng.randn(B, N, D))


def split(arrays, ctx):
    return [gluon.utils.split_and_load(nd.array(a), ctx, even_split=False) for a in arrays]


class FixedOutputs(gluon.Block):
    """A parameterless network that returns the same training outputs for any input."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, x):  # pylint: disable=arguments-differ
        return self.outputs


def make_loss(mode, lmbd=1.0, hybridize=True):
    loss = MultiBoxCenterLoss(C, D, mode=mode, lmbd=lmbd)
    loss.initialize(mx.init.Normal(1.0), ctx=CTX2)
    if hybridize:
        loss.hybridize()
    return loss


@pytest.mark.parametrize('ctx', [[mx.cpu()], CTX2], ids=['one_ctx', 'two_ctx'])
@pytest.mark.parametrize('seed', [0, 1])
def test_softmax_mode_equals_gluoncv(ctx, seed):
    cp, bp, ct, bt, _ = split(random_batch(seed), ctx)
    want_sum, want_cls, want_box = SSDMultiBoxLoss()(cp, bp, ct, bt)
    got = make_loss('softmax')(cp, bp, ct, bt)
    for got_list, want_list in ((got.total, want_sum), (got.cls, want_cls), (got.box, want_box)):
        for g, w in zip(got_list, want_list):
            np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-6)
    assert all(not c.asnumpy().any() for c in got.center)


@pytest.mark.parametrize('mode', list(Mode))
def test_no_positives_gives_zero_and_finite_gradients(mode):
    cp, bp, ct, bt, emb = split(random_batch(3, positives=False), [mx.cpu()])
    loss = make_loss(mode)
    for x in cp + bp + emb:
        x.attach_grad()
    with autograd.record():
        terms = loss(cp, bp, ct, bt, emb)
    autograd.backward(terms.total)
    assert terms.total[0].asnumpy().tolist() == [0.0] * B
    for x in cp + bp + emb:
        assert np.all(np.isfinite(x.grad.asnumpy()))


@pytest.mark.parametrize('lmbd', [0.5, 2.0])
def test_center_term_counts_the_whole_batch_across_devices(lmbd):
    batch = random_batch(4)
    loss = make_loss('softmax-center', lmbd)
    centers = loss.center_loss.centers.weight.data(mx.cpu(0)).asnumpy()
    cls_target, emb = batch[2], batch[4]
    labels = cls_target.reshape(-1) - 1
    ref, _, _ = reference(emb.reshape(-1, D), labels, centers, (labels >= 0).astype(float))
    want = lmbd * ref.reshape(B, N).sum(axis=1) / (labels >= 0).sum()  # divided by N, like SSD
    for ctx in ([mx.cpu()], CTX2):
        cp, bp, ct, bt, em = split(batch, ctx)
        got = loss(cp, bp, ct, bt, em)
        np.testing.assert_allclose(np.concatenate([c.asnumpy() for c in got.center]), want,
                                   rtol=1e-5)
        totals = np.concatenate([t.asnumpy() for t in got.total])
        parts = sum(np.concatenate([p.asnumpy() for p in part])
                    for part in (got.cls, got.box, got.center))
        np.testing.assert_allclose(totals, parts, rtol=1e-5)


def objectness(cls_pred, cls_target, ratio=3):
    """NumPy: per image (B,), the object-against-background cross-entropy of its positives,
    -log(1 - p_0), plus -log p_0 of its ``ratio`` × (its positives) hardest non-positive
    anchors (as GluonCV's mining: ignored anchors rank with the negatives)."""
    p = np.exp(cls_pred - cls_pred.max(axis=-1, keepdims=True))
    p_background = p[..., 0] / p.sum(axis=-1)
    out = []
    for p0, target in zip(p_background, cls_target):
        positive = target > 0
        hardest = np.sort(-np.log(p0[~positive]))[::-1][:ratio * int(positive.sum())]
        out.append(-np.log(1 - p0[positive]).sum() + hardest.sum())
    return np.array(out)


@pytest.mark.parametrize('hybridize', [False, True])
def test_center_mode_trains_objectness_not_the_class(hybridize):
    batch = random_batch(5)
    cp, bp, ct, bt, emb = split(batch, [mx.cpu()])
    got = make_loss('center', hybridize=hybridize)(cp, bp, ct, bt, emb)
    want = objectness(batch[0], batch[2]) / (batch[2] > 0).sum()
    np.testing.assert_allclose(got.total[0].asnumpy(),
                               (got.box[0] + got.center[0]).asnumpy() + want, rtol=1e-5)
    assert got.cls[0].asnumpy().sum() > want.sum() > 0  # the classes' loss is still reported


def test_objectness_of_a_confident_positive_is_finite():
    """-log(1 - p_0) through the object classes' log-sum-exp: no log(0) when p_0 rounds to 1
    or the objects' logits are far below the background's."""
    cls_pred = np.zeros((1, 4, C + 1))
    cls_pred[0, :, 0] = [200.0, -200.0, 0.0, 0.0]
    cls_target = np.array([[1, 2, 0, 0]])
    cp, bp, ct, bt, emb = split((cls_pred, np.zeros((1, 4, 4)), cls_target, np.zeros((1, 4, 4)),
                                 np.zeros((1, 4, D))), [mx.cpu()])
    got = make_loss('center')(cp, bp, ct, bt, emb)
    total = got.total[0].asnumpy() - got.box[0].asnumpy() - got.center[0].asnumpy()
    # anchor 0: -log(1 - p_0) ≈ 200 - log 3; anchor 1: ≈ 0; the negatives: -log(1/4) each
    np.testing.assert_allclose(total, [(200 - np.log(3) + 2 * np.log(4)) / 2], rtol=1e-5)


def test_center_modes_need_embeddings_and_lmbd_positive():
    cp, bp, ct, bt, _ = split(random_batch(6), [mx.cpu()])
    with pytest.raises(ValueError, match='embeddings'):
        make_loss('softmax-center')(cp, bp, ct, bt)
    with pytest.raises(ValueError, match='lmbd'):
        MultiBoxCenterLoss(C, D, mode='center', lmbd=0)
    with pytest.raises(ValueError):
        MultiBoxCenterLoss(C, D, mode='triplet')


@pytest.mark.parametrize('lmbd', [0.1, 1.0])
def test_center_step_of_the_loop_moves_centers_towards_class_means(lmbd):
    """train_epoch's center step (rate alpha, on the gradient of lmbd * L_center / N) gives
    Wen et al.'s update c <- c - alpha * (c - class mean), whatever lmbd and N."""
    from gluon_ssdcl.engine.train import make_center_trainer, train_epoch

    batch = random_batch(7)
    loss = MultiBoxCenterLoss(C, D, mode='softmax-center', lmbd=lmbd)
    loss.initialize(mx.init.Normal(1.0))
    trainer = make_center_trainer(loss.center_loss, alpha=0.5, lmbd=lmbd)
    before = loss.center_loss.centers.weight.data(mx.cpu(0)).asnumpy().copy()
    cp, bp, ct, bt, emb = batch
    labels = ct.reshape(-1) - 1
    outputs = [nd.array(cp), nd.array(bp), nd.zeros((1, N, 4)), nd.array(emb)]
    net_trainer = SimpleNamespace(step=lambda batch_size: None, learning_rate=0.0)
    loader = [(nd.zeros((B, 1)), nd.array(ct), nd.array(bt))]
    train_epoch(FixedOutputs(outputs), loss, net_trainer, trainer, loader, [mx.cpu(0)], epoch=0)
    after = loss.center_loss.centers.weight.data(mx.cpu(0)).asnumpy()
    for j in range(C):
        members = emb.reshape(-1, D)[labels == j]
        np.testing.assert_allclose(after[j], before[j] - 0.5 * (before[j] - members.mean(0)),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('mode', list(Mode))
def test_loss_returns_the_positives_of_the_whole_batch_on_each_device(mode):
    cp, bp, ct, bt, emb = random_batch(3)
    ct[:] = 0
    ct[0, :5], ct[1, 7:9], ct[3, -4:] = 1, 3, 2  # 11 positives
    ct[2, :6] = -1  # ignored anchors are not positives
    terms = make_loss(mode)(*split((cp, bp, ct, bt, emb), CTX2))
    assert [n.context for n in terms.num_pos] == CTX2
    assert [n.asscalar() for n in terms.num_pos] == [11, 11]


def test_the_center_step_uses_the_n_the_loss_returned():
    """train_epoch steps the center trainer with 1 / N, N read from the loss's own terms: a
    loss that reports another N changes the step."""
    from gluon_ssdcl.engine.train import train_epoch

    cp, bp, ct, bt, emb = random_batch(4)
    real = make_loss('softmax-center')
    steps = []
    center_trainer = SimpleNamespace(step=steps.append)
    net_trainer = SimpleNamespace(step=lambda batch_size: None, learning_rate=0.0)
    outputs = [nd.array(cp), nd.array(bp), nd.zeros((1, N, 4)), nd.array(emb)]
    loader = [(nd.zeros((B, 1)), nd.array(ct), nd.array(bt))]

    class Reporting(MultiBoxCenterLoss):
        """The loss, reporting N = 40 whatever the batch."""

        def forward(self, *args):
            terms = super().forward(*args)
            return terms._replace(num_pos=[nd.array([40.0]) for _ in terms.num_pos])
    reporting = Reporting(C, D, mode='softmax-center')
    reporting.initialize(ctx=CTX2)
    net = FixedOutputs(outputs)
    train_epoch(net, real, net_trainer, center_trainer, loader, [mx.cpu(0)], 0)
    train_epoch(net, reporting, net_trainer, center_trainer, loader, [mx.cpu(0)], 0)
    assert steps == [pytest.approx(1 / np.sum(ct > 0)), pytest.approx(1 / 40)]
