"""CenterLoss: class-balanced center loss with learned centers in a ``gluon.nn.Embedding``;
CenterPush: the hinge pushing embeddings a margin away from the other classes' centers."""
import numpy as np
from mxnet import gluon, nd
from mxnet.gluon import nn

__all__ = ['CenterLoss', 'CenterPush', 'class_histogram', 'sum_over_devices']

EPS = 1e-12  # inside CenterPush's square root: a finite gradient at distance 0


def _selected_one_hot(F, labels, num_classes, mask):
    """(M, num_classes) one-hot rows of the selected samples, zero rows for the others."""
    one_hot = F.one_hot(labels, num_classes)
    return one_hot if mask is None else F.broadcast_mul(one_hot, mask.reshape((-1, 1)))


def class_histogram(F, labels, num_classes, mask=None):
    """Number of selected samples per class: the sum over the samples of ``one_hot(labels) *
    mask``, with hybridizable ops (one_hot + sum) for symbols, and counted on the host for
    NDArrays (NumPy's bincount of the read labels and mask; about 30 times faster on a CPU
    than one_hot + sum over the 87,296 anchors of a batch of 16 images).

    Parameters
    ----------
    F : mxnet.nd or mxnet.sym
    labels : (M,) class indices; values outside [0, num_classes) count for nothing.
    mask : (M,) 1 for samples to count, 0 for the rest; None counts every sample.

    Returns
    -------
    (num_classes,) float32 counts, on the labels' context.
    """
    if isinstance(labels, nd.NDArray):
        classes = labels.asnumpy().reshape(-1).astype(np.int64)  # one_hot's cast: truncation
        weights = None if mask is None else mask.asnumpy().reshape(-1)
        valid = (classes >= 0) & (classes < num_classes)
        counts = np.bincount(classes[valid], None if weights is None else weights[valid],
                             minlength=num_classes)
        return nd.array(counts, ctx=labels.context, dtype='float32')
    return F.sum(_selected_one_hot(F, labels, num_classes, mask), axis=0)


def _selected_rows(mask, min_rows=16):
    """Indices of the rows where ``mask`` (M,) NumPy is not 0, padded with distinct unselected
    rows to the next power of two of at least ``min_rows`` (at most M): the (R,) int32 rows
    the center loss computes, few distinct R so the hybridized graph sees few shapes."""
    selected = np.flatnonzero(mask)
    rows = min(len(mask), max(min_rows, 1 << int(len(selected) - 1).bit_length()))
    padding = np.flatnonzero(mask == 0)[:rows - len(selected)]
    return np.concatenate([selected, padding]).astype(np.int32)


def sum_over_devices(values):
    """The sum of per-device arrays, as one copy on each device (no host synchronisation):
    e.g. the class histograms of each device's part of a mini-batch, or its positive counts."""
    total = values[0]
    for value in values[1:]:
        total = total + value.as_in_context(total.context)
    return [total.as_in_context(value.context) for value in values]


class CenterLoss(gluon.HybridBlock):
    r"""Center loss of Wen et al. (2016), balanced by the label histogram of the batch.

    For every selected sample ``i``: :math:`\frac{1}{2}\lVert x_i - c_{y_i}\rVert^2 / n_{y_i}`,
    where ``n_j`` counts the selected samples of class ``j``. Summed over the batch this is
    :math:`\sum_j \mathrm{mean}_{i: y_i=j} \frac{1}{2}\lVert x_i - c_j\rVert^2`; with nothing
    selected every value is 0 (never NaN).

    Parameters
    ----------
    num_classes : int
        Number of classes; ``centers`` is an ``nn.Embedding(num_classes, embed_dim)``.
    embed_dim : int
        Dimension D of the features.

    Inputs
    ------
    features : (M, D) features.
    labels : (M,) class indices in [0, num_classes); others are ignored.
    mask : (M,) optional, 1 keeps a sample and 0 drops it (background, ignored anchors).
    counts : (num_classes,) optional class counts to normalise by, e.g. summed over all
        devices; by default the histogram of the selected labels.

    Outputs
    -------
    (M,) per-sample loss (0 for dropped samples). Call the block with the same optional inputs
    each time once it is hybridized.

    Notes
    -----
    Called on NDArrays with a mask, the block computes only the selected samples: it reads the
    mask on the host, takes the selected rows of ``features`` and ``labels`` (padded with
    dropped ones to a power of two), computes their loss with :meth:`hybrid_forward` and
    scatters it back to the M samples; the values and gradients are those of the formula over
    all M samples (0 for the dropped ones). For an SSD batch that is a few hundred positive
    anchors instead of every anchor.
    """

    def __init__(self, num_classes, embed_dim, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1 or embed_dim < 1:
            raise ValueError(f"num_classes and embed_dim must be positive, "
                             f"got {num_classes} and {embed_dim}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        with self.name_scope():
            self.centers = nn.Embedding(num_classes, embed_dim)

    # pylint: disable=arguments-differ
    def forward(self, features, labels, mask=None, counts=None):
        if not isinstance(mask, nd.NDArray):
            return super().forward(features, labels, mask, counts)
        rows = nd.array(_selected_rows(mask.asnumpy().reshape(-1)), ctx=features.context,
                        dtype='int32')
        values = super().forward(nd.take(features, rows), nd.take(labels, rows),
                                 nd.take(mask, rows), counts)
        return nd.scatter_nd(values, rows.reshape((1, -1)), shape=(mask.shape[0],))

    def hybrid_forward(self, F, features, labels, mask=None, counts=None):
        one_hot = _selected_one_hot(F, labels, self.num_classes, mask)
        if counts is None:
            counts = F.sum(one_hot, axis=0)
        # weight_i = 1 / n_{y_i} for selected samples, 0 otherwise
        weight = F.dot(one_hot, 1.0 / F.maximum(counts, 1.0))
        distance = 0.5 * F.sum(F.square(features - self.centers(labels)), axis=1)
        return distance * weight


class CenterPush(gluon.HybridBlock):
    r"""The push-away half of ORE's prototype loss (Joseph et al. 2021, "Towards Open World
    Object Detection"), beside the center loss's pull.

    For every selected sample ``i`` of class ``y_i`` (-1: background, whose samples are pushed
    from every center) and every center ``c_j`` of another class that is present:
    :math:`w_i \max(0, \Delta - \lVert x_i - c_j\rVert)`. With ``w_i = 1 / n_{y_i}`` (the
    samples of ``i``'s class, background counted as one) the sum over a batch is
    :math:`\sum_k \mathrm{mean}_{i: y_i=k} \sum_{j \ne k} \max(0, \Delta - d_{ij})`. The
    centers get no gradient: they follow the center loss alone.

    Parameters
    ----------
    num_classes : int
        C, the number of centers.
    margin : float
        Δ > 0.

    Inputs
    ------
    features : (M, D)
    labels : (M,) class ids in [0, C), or -1 (background).
    weights : (M,) ``w_i``; 0 drops a sample.
    centers : (C, D)
    present : (C,) 1 for the centers that push, 0 for the others (e.g. classes absent from the
        batch, whose centers may never have been trained).

    Outputs
    -------
    (M,) per-sample loss.

    Notes
    -----
    Called on NDArrays, the block computes only the samples of non-zero weight (read on the
    host, padded as :class:`CenterLoss` does) and scatters their loss back to the M samples.
    """

    def __init__(self, num_classes, margin, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1 or not margin > 0:
            raise ValueError(f"need num_classes >= 1 and margin > 0, got {num_classes} and "
                             f"{margin}")
        self.num_classes = num_classes
        self.margin = float(margin)

    # pylint: disable=arguments-differ
    def forward(self, features, labels, weights, centers, present):
        if not isinstance(weights, nd.NDArray):
            return super().forward(features, labels, weights, centers, present)
        rows = nd.array(_selected_rows(weights.asnumpy().reshape(-1)), ctx=features.context,
                        dtype='int32')
        values = super().forward(nd.take(features, rows), nd.take(labels, rows),
                                 nd.take(weights, rows), centers, present)
        return nd.scatter_nd(values, rows.reshape((1, -1)), shape=(weights.shape[0],))

    def hybrid_forward(self, F, features, labels, weights, centers, present):
        centers = F.BlockGrad(centers)
        diff = F.broadcast_sub(features.expand_dims(1), centers.expand_dims(0))  # (M, C, D)
        distance = F.sqrt(F.sum(F.square(diff), axis=2) + EPS)  # (M, C)
        others = F.broadcast_mul(1 - F.one_hot(labels, self.num_classes),
                                 present.reshape((1, -1)))
        return F.sum(F.relu(self.margin - distance) * others, axis=1) * weights
