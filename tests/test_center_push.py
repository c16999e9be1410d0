"""CenterPush (ORE's push-away hinge) and the push term of the multibox loss against NumPy."""
import numpy as np
import pytest
from mxnet import autograd, nd

from gluon_ssdcl.losses import CenterPush, MultiBoxCenterLoss


def numpy_push(features, labels, weights, centers, present, margin):
    """Per sample ``w_i sum_{j != y_i, present} max(0, margin - |x_i - c_j|)`` and its gradient
    with respect to the features."""
    values = np.zeros(len(features))
    grads = np.zeros_like(features)
    for i, (x, y, w) in enumerate(zip(features, labels, weights)):
        for j, c in enumerate(centers):
            d = np.linalg.norm(x - c)
            if j != y and present[j] and d < margin:
                values[i] += w * (margin - d)
                grads[i] -= w * (x - c) / d
    return values, grads


@pytest.mark.parametrize('hybridize', [False, True])
def test_push_value_and_gradient_match_numpy(hybridize):
    rng = np.random.RandomState(0)
    features = rng.randn(9, 3)
    centers = rng.randn(4, 3)
    labels = np.array([0, 1, 2, 3, -1, -1, 0, 2, 1])  # -1: background, pushed from every center
    weights = np.array([1, 0.5, 1, 2, 0.25, 0.25, 1, 0, 0.5])  # 0 drops sample 7
    present = np.array([1, 1, 0, 1])  # class 2 absent from the batch: its center does not push
    push = CenterPush(4, margin=2.5)
    if hybridize:
        push.hybridize()
    x = nd.array(features)
    x.attach_grad()
    with autograd.record():
        out = push(x, nd.array(labels), nd.array(weights), nd.array(centers), nd.array(present))
    out.backward()
    values, grads = numpy_push(features, labels, weights, centers, present, 2.5)
    assert (values > 0).sum() >= 5  # the margin is active for most samples
    np.testing.assert_allclose(out.asnumpy(), values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.asnumpy(), grads, rtol=1e-4, atol=1e-6)


def test_push_hand_computed_and_centers_get_no_gradient():
    push = CenterPush(2, margin=3.0)
    x = nd.array([[0.0, 0.0], [0.0, 0.0]])
    centers = nd.array([[0.0, 0.0], [1.0, 0.0]])
    centers.attach_grad()
    with autograd.record():
        out = push(x, nd.array([0, -1]), nd.array([1.0, 0.5]), centers, nd.array([1, 1]))
    out.backward()
    # sample 0 (class 0) is pushed from center 1 only: 3 - 1; the background one from both
    np.testing.assert_allclose(out.asnumpy(), [2.0, 0.5 * (3 + 2)], rtol=1e-5)
    assert np.isfinite(out.asnumpy()).all()
    np.testing.assert_array_equal(centers.grad.asnumpy(), 0)


def anchors_batch(rng, num_pos, num_anchors=40, num_classes=3, dim=4):
    cls_target = np.zeros((2, num_anchors))
    cls_target[0, :num_pos] = rng.randint(1, num_classes + 1, num_pos)
    cls_target[1, -3:] = -1  # ignored anchors
    return (nd.array(rng.randn(2, num_anchors, num_classes + 1)),
            nd.array(rng.randn(2, num_anchors, 4)), nd.array(cls_target),
            nd.array(rng.randn(2, num_anchors, 4)), nd.array(rng.randn(2, num_anchors, dim)))


@pytest.mark.parametrize('negatives', [False, True])
def test_push_term_of_the_multibox_loss(negatives):
    rng = np.random.RandomState(3)
    cls_pred, box_pred, cls_target, box_target, emb = anchors_batch(rng, num_pos=6)
    kwargs = dict(mode='softmax-center', lmbd=0.5)
    plain = MultiBoxCenterLoss(3, 4, **kwargs)
    pushed = MultiBoxCenterLoss(3, 4, push_margin=4.0, push_negatives=negatives, **kwargs)
    for loss in (plain, pushed):
        loss.initialize()
    centers = rng.randn(3, 4)
    for loss in (plain, pushed):
        loss.center_loss.centers.weight.set_data(nd.array(centers))
    extra = (pushed(cls_pred, box_pred, cls_target, box_target, emb).center[0]
             - plain(cls_pred, box_pred, cls_target, box_target, emb).center[0]).asnumpy()
    # NumPy: positives weighted 1 / n_class, hard negatives 1 / n_neg; λ / N
    target = cls_target.asnumpy()
    labels = target.reshape(-1).astype(int) - 1
    pos = target.reshape(-1) > 0
    counts = np.bincount(labels[pos], minlength=3)
    weights = np.where(pos, 1.0 / np.maximum(counts[np.maximum(labels, 0)], 1), 0.0)
    if negatives:
        # GluonCV's hard negative mining: the 3 * positives background anchors of the highest
        # confidence loss in each image
        log_p = cls_pred.asnumpy() - np.log(np.exp(cls_pred.asnumpy()).sum(-1, keepdims=True))
        hard = np.zeros_like(target, bool)
        for b in range(2):
            loss = -log_p[b, np.arange(target.shape[1]), np.maximum(target[b], 0).astype(int)]
            loss[target[b] != 0] = -np.inf  # positives and ignored anchors are not negatives
            order = np.argsort(-loss)[:3 * int((target[b] > 0).sum())]
            hard[b, order] = True
        hard = hard.reshape(-1)
        assert hard.sum() == 18
        weights = weights + hard / hard.sum()
    values, _ = numpy_push(emb.asnumpy().reshape(-1, 4), labels, weights, centers,
                           counts > 0, 4.0)
    expected = values.reshape(2, -1).sum(axis=1) * 0.5 / pos.sum()
    assert expected[0] > 0 and expected[1] == 0  # image 1 has no positive, so no negative
    np.testing.assert_allclose(extra, expected, rtol=1e-4, atol=1e-6)


def test_push_without_positives_or_negatives_is_zero_or_finite_not_nan():
    loss = MultiBoxCenterLoss(3, 4, mode='softmax-center', push_margin=2.0, push_negatives=True)
    loss.initialize()
    rng = np.random.RandomState(4)
    cls_pred, box_pred, cls_target, box_target, emb = anchors_batch(rng, num_pos=0)
    terms = loss(cls_pred, box_pred, cls_target, box_target, emb)
    np.testing.assert_array_equal(terms.center[0].asnumpy(), 0)  # nothing to push
    # every anchor positive or ignored: positives are pushed, there is no negative
    target = rng.randint(1, 4, (2, 40)).astype(np.float32)
    target[1, -3:] = -1
    for x in (cls_pred, box_pred, emb):
        x.attach_grad()
    with autograd.record():
        terms = loss([cls_pred], [box_pred], [nd.array(target)], [box_target], [emb])
    autograd.backward(terms.total)
    assert np.isfinite(terms.center[0].asnumpy()).all() and terms.center[0].sum() > 0
    assert np.isfinite(emb.grad.asnumpy()).all() and np.abs(emb.grad.asnumpy()).sum() > 0


def test_push_flags_are_checked():
    with pytest.raises(ValueError, match='softmax mode'):
        MultiBoxCenterLoss(3, 4, mode='softmax', push_margin=1.0)
    with pytest.raises(ValueError, match='needs push_margin'):
        MultiBoxCenterLoss(3, 4, mode='softmax-center', push_negatives=True)
    with pytest.raises(ValueError, match='margin > 0'):
        CenterPush(3, 0.0)



def test_push_flags_of_the_train_command(capsys):
    from gluon_ssdcl.commands.train import parse_args
    args = parse_args(['--center-loss', '--push-margin', '5', '--push-negatives'])
    assert (args.push_margin, args.push_negatives) == (5.0, True)
    assert args.save_prefix.endswith('_push5-neg')
    assert parse_args([]).push_margin == 0
    for argv, message in ((['--push-margin', '5'], '--push-margin pushes from the centers'),
                          (['--center-loss', '--push-negatives'], 'needs --push-margin'),
                          (['--center-loss', '--push-margin', '-1'], '--push-margin')):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
