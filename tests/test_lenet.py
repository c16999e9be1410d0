import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon

from gluon_ssdcl import CenterLoss, Mode
from gluon_ssdcl.experiments.lenet import (LeNetPlusPlus, collect_features, evaluate_classifier,
                                           feature_accuracies, load_mnist, three_modes,
                                           train_classifier)


def _tiny_setup(num_classes=3, size=16, num=6, seed=0):
    """An initialised LeNet++ and CenterLoss, and ``num`` random ``size`` x ``size`` images."""
    mx.random.seed(seed)
    net = LeNetPlusPlus(num_classes, feature_dim=2)
    net.initialize()
    center_loss = CenterLoss(num_classes, 2)
    center_loss.initialize(mx.init.Normal(1.0))
    rng = np.random.RandomState(seed)
    images = rng.randn(num, 1, size, size).astype(np.float32)
    return net, center_loss, images


def _params(block):
    """Copies of the parameters' values by name, less the block's own prefix."""
    return {name[len(block.prefix):]: p.data().asnumpy().copy()
            for name, p in block.collect_params().items()}


@pytest.mark.parametrize('hybridize', [False, True])
def test_output_shapes(hybridize):
    net = LeNetPlusPlus(num_classes=7, feature_dim=3)
    net.initialize()
    if hybridize:
        net.hybridize()
    logits, features = net(mx.nd.random.normal(shape=(4, 1, 28, 28)))
    assert logits.shape == (4, 7)
    assert features.shape == (4, 3)
    # the feature layer feeds the classifier directly
    np.testing.assert_allclose(net.classifier(features).asnumpy(), logits.asnumpy(),
                               rtol=1e-5, atol=1e-6)


def test_load_mnist_is_a_deterministic_disjoint_split():
    (x_train, y_train), (x_test, y_test) = load_mnist(300, 200, seed=1)
    assert x_train.shape == (300, 1, 28, 28) and x_test.shape == (200, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert set(np.unique(y_train)) <= set(range(10))
    assert abs(float(x_train.mean())) < 0.2 and 0.7 < float(x_train.std()) < 1.3
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_test)
    (again, _), _ = load_mnist(300, 200, seed=1)
    np.testing.assert_array_equal(again, x_train)
    (other, _), _ = load_mnist(300, 200, seed=2)
    assert not np.array_equal(other, x_train)


@pytest.mark.parametrize('num_train, num_test', [(4001, 1000), (0, 10), (10, 0)])
def test_load_mnist_rejects_bad_sizes(num_train, num_test):
    with pytest.raises(ValueError):
        load_mnist(num_train, num_test)


@pytest.mark.parametrize('lmbd', [0.1, 2.0])
def test_training_step_moves_centers_by_wen_rule_and_reports_the_losses(lmbd):
    alpha = 0.5
    net, center_loss, images = _tiny_setup()
    labels = np.array([0, 2, 0, 0, 2, 2])  # class 1 absent: its center must stay
    features, _ = collect_features(net, images)  # no dropout / BN: as seen while training
    logits = net(mx.nd.array(images))[0].asnumpy()
    before = center_loss.centers.weight.data().asnumpy().copy()
    history = train_classifier(net, center_loss, (images, labels), 'softmax-center', epochs=1,
                               batch_size=len(images), lr=0.01, lmbd=lmbd, alpha=alpha)
    after = center_loss.centers.weight.data().asnumpy()
    for j in range(3):
        members = features[labels == j]
        want = before[j] if not len(members) else before[j] - alpha * (before[j] - members.mean(0))
        np.testing.assert_allclose(after[j], want, rtol=1e-5, atol=1e-6)
    # L_center = sum over classes of the class mean of 0.5 ||x - c||^2; the loss is
    # (sum of CE + lmbd * L_center) / B: mean CE + lmbd * L_center / B
    center = lmbd / len(labels) * sum(
        0.5 * np.mean(np.sum((features[labels == j] - before[j]) ** 2, axis=1)) for j in (0, 2))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    softmax = -np.mean(log_prob[np.arange(len(labels)), labels])
    (record,) = history
    assert record['center'] == pytest.approx(center, rel=1e-4)
    assert record['softmax'] == pytest.approx(softmax, rel=1e-4)
    assert record['loss'] == pytest.approx(softmax + center, rel=1e-4)
    assert record['accuracy'] == pytest.approx(np.mean(logits.argmax(1) == labels))


@pytest.mark.parametrize('mode', list(Mode))
def test_each_mode_updates_what_it_trains_and_nothing_else(mode):
    net, center_loss, images = _tiny_setup()
    labels = np.array([0, 1, 2, 0, 1, 2])
    train_classifier(net, center_loss, (images, labels), 'softmax-center', epochs=1,
                     batch_size=3, lr=0.01, warmup_iters=0)  # a first stage, as center mode wants
    net_before, centers_before = _params(net), _params(center_loss)
    train_classifier(net, center_loss, (images, labels), mode, epochs=2, batch_size=3, lr=0.01)
    net_after, centers_after = _params(net), _params(center_loss)
    for name, value in net_after.items():
        if mode is Mode.CENTER and name.startswith('classifier_'):
            # bit-identical: no gradient, no weight decay, no momentum
            np.testing.assert_array_equal(value, net_before[name], err_msg=name)
        else:
            assert not np.array_equal(value, net_before[name]), name
    (name,) = centers_after
    trained = mode is Mode.SOFTMAX_CENTER  # center mode keeps them fixed, as in SSD
    assert np.array_equal(centers_after[name], centers_before[name]) != trained
    frozen = {p.name for p in net.collect_params().values() if p.grad_req == 'null'}
    assert frozen == ({p.name for p in net.classifier.collect_params().values()}
                      if mode is Mode.CENTER else set())
    if mode.uses_center:
        assert (center_loss.centers.weight.grad_req == 'null') != trained


def test_training_on_mnist_digits_lowers_the_loss_and_beats_chance():
    (images, labels), _ = load_mnist(128, 10)
    mx.random.seed(0)
    net = LeNetPlusPlus()
    net.initialize()
    center_loss = CenterLoss(10, 2)
    center_loss.initialize()
    history = train_classifier(net, center_loss, (images, labels), 'softmax-center', epochs=5,
                               batch_size=16, seed=0)
    assert history[-1]['loss'] < history[0]['loss'] - 0.2
    _, predictions = collect_features(net, images)
    assert np.mean(predictions == labels) > 0.2  # chance: 0.1


def test_training_is_reproducible_from_the_seed():
    def run():
        net, center_loss, images = _tiny_setup()
        train_classifier(net, center_loss, (images, np.array([0, 1, 2, 0, 1, 2])),
                         'softmax-center', epochs=2, batch_size=2, lr=0.01, seed=3)
        return _params(net), _params(center_loss)
    first, second = run(), run()
    for a, b in zip(first, second):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


class _Identity(gluon.HybridBlock):
    """A stand-in classifier: features are the two pixels of a (1, 1, 2) image, and so are the
    logits (class 0 unless the second pixel is larger)."""
    num_classes = 2
    feature_dim = 2

    def hybrid_forward(self, F, x):  # pylint: disable=arguments-differ
        features = F.flatten(x)
        return features, features


def test_evaluate_classifier_on_a_hand_made_case():
    gallery = np.array([[0, 0], [0, 1], [1, 0], [5, 5], [5, 6], [6, 5]], np.float32)
    train = (gallery.reshape(-1, 1, 1, 2), np.array([0, 0, 0, 1, 1, 1]))
    queries = np.array([[0.5, 0.5], [5.5, 5], [4, 4]], np.float32)
    test = (queries.reshape(-1, 1, 1, 2), np.array([0, 1, 0]))
    centers = np.array([[0, 0], [10, 10]], np.float32)
    results = evaluate_classifier(_Identity(), centers, train, test, k=3)
    # softmax: argmax (0.5, 0.5) -> 0 ok, (5.5, 5) -> 0 wrong, (4, 4) -> 0 ok
    assert results['softmax_acc'] == pytest.approx(2 / 3)
    # 3-NN: class 0, class 1, class 1 (wrong: (4, 4) lies nearer the class-1 cluster)
    assert results['knn_acc'] == pytest.approx(2 / 3)
    # nearest center: (4, 4) is nearer (0, 0) than (10, 10): all right
    assert results['center_acc'] == 1.0
    assert results['train_softmax_acc'] == 0.5
    assert (results['knn_k'], results['num_train'], results['num_test']) == (3, 6, 3)
    assert evaluate_classifier(_Identity(), None, train, test, k=1)['center_acc'] is None


def test_collect_features_batches_like_one_pass():
    net, _, images = _tiny_setup(num=7)
    features, predictions = collect_features(net, images, batch_size=3)
    logits, want = net(mx.nd.array(images))
    np.testing.assert_allclose(features, want.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predictions, logits.asnumpy().argmax(1))
    assert features.shape == (7, 2) and predictions.dtype == np.int64


@pytest.mark.parametrize('kwargs, match', [
    ({'mode': 'center', 'center_loss': None}, 'needs a center_loss'),
    ({'mode': 'bogus'}, 'bogus'),
    ({'center_loss': CenterLoss(4, 2)}, 'classes'),
    ({'labels': np.array([0, 1, 2, 3, 0, 1])}, r'\[0, 3\)'),
    ({'labels': np.array([0.0, 1, 2, 0, 1, 2])}, 'integers'),
    ({'labels': np.array([0, 1, 2])}, 'shape'),
    ({'images': np.zeros((6, 3, 16, 16), np.float32)}, r'\(N, 1, H, W\)'),
    ({'epochs': 0}, 'epochs'),
    ({'alpha': 1.5}, 'alpha'),
    ({'lmbd': 0.0}, 'lmbd'),
])
def test_train_classifier_rejects_bad_input(kwargs, match):
    net, center_loss, images = _tiny_setup()
    args = {'center_loss': center_loss, 'images': images, 'labels': np.array([0, 1, 2, 0, 1, 2]),
            'mode': 'softmax-center', 'epochs': 1, 'alpha': 0.5, 'lmbd': 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_classifier(net, args['center_loss'], (args['images'], args['labels']),
                         args['mode'], epochs=args['epochs'], alpha=args['alpha'],
                         lmbd=args['lmbd'])


def test_evaluate_classifier_rejects_a_k_larger_than_the_gallery():
    data = (np.zeros((3, 1, 1, 2), np.float32), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match='k must be'):
        evaluate_classifier(_Identity(), None, data, data, k=4)


def test_feature_accuracies_rejects_mismatched_lengths():
    features = np.zeros((3, 2))
    with pytest.raises(ValueError, match='differ in length'):
        feature_accuracies(features, np.array([0, 1, 0]), features, np.array([0, 1, 0]),
                           np.array([0, 1]))


def test_lenet_rejects_bad_sizes():
    with pytest.raises(ValueError):
        LeNetPlusPlus(num_classes=1)
    with pytest.raises(ValueError):
        LeNetPlusPlus(feature_dim=0)


def test_three_modes_continues_softmax_center_with_frozen_centers():
    train_data, test_data = load_mnist(64, 32, seed=1)
    results = three_modes(train_data, test_data, epochs={'softmax': 1, 'softmax-center': 2},
                          k=3)
    assert [len(results[m]['history']) for m in ('softmax', 'softmax-center', 'center')] == \
        [1, 2, 1]
    assert results['softmax']['centers'] is None
    # the second stage continued the first one's net with its centers frozen (SECOND_STAGE)
    np.testing.assert_array_equal(results['center']['centers'],
                                  results['softmax-center']['centers'])
    assert results['center']['history'][0]['center'] > 0
    for mode in ('softmax-center', 'center'):  # nearest center, by hand in NumPy
        test, centers = results[mode]['test'], results[mode]['centers']
        nearest = np.argmin(((test[:, None] - centers[None]) ** 2).sum(-1), axis=1)
        assert results[mode]['accuracies']['center_acc'] == pytest.approx(
            np.mean(nearest == test_data[1]))
        assert results[mode]['train'].shape == (64, 2)
