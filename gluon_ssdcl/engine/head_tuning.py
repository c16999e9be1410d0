"""Fine-tuning chosen rows of the class head on fixed embeddings: few-shot registration by
fine-tuning, as TFA (Wang et al. 2020) fine-tunes the last layer of a detector.

The class head is linear (``logits = weight @ e + bias``, row 0 the background), so with the
embeddings fixed, fine-tuning it is a softmax regression on the examples' embeddings. A
registered class's row starts from its center (:func:`initial_rows`) and only the chosen rows
train (:func:`fine_tune_rows`); the others stay exactly as they are.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import mxnet as mx
import numpy as np

__all__ = ['initial_rows', 'balanced_cross_entropy', 'fine_tune_rows']


def initial_rows(weight: np.ndarray, bias: np.ndarray, rows: Sequence[int], centers: np.ndarray,
                 trained: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The head with each row of ``rows`` set from its class's center: the center scaled to the
    mean norm of the ``trained`` rows, and the mean of their biases.

    Parameters
    ----------
    weight : numpy.ndarray, (C + 1, D)
    bias : numpy.ndarray, (C + 1,)
    rows : sequence of int
        Head rows to set (class id + 1).
    centers : numpy.ndarray, (len(rows), D)
        Their classes' centers (e.g. the mean embedding of the examples).
    trained : sequence of int
        Head rows of trained classes, whose norms and biases give the scale.
    """
    weight, bias = np.array(weight, np.float64), np.array(bias, np.float64)
    scale = np.linalg.norm(weight[list(trained)], axis=1).mean()
    for row, center in zip(rows, np.asarray(centers, np.float64)):
        weight[row] = center * scale / max(np.linalg.norm(center), 1e-12)
        bias[row] = bias[list(trained)].mean()
    return weight, bias


def balanced_cross_entropy(F, logits, targets, sample_weights):
    """Softmax cross-entropy of (M, C + 1) logits against (M,) targets, weighted per sample
    ((M,), e.g. ``1 / (n_class * classes)`` so that each class counts once); a scalar."""
    log_p = F.log_softmax(logits, axis=-1)
    return -F.sum(F.pick(log_p, targets, axis=-1) * sample_weights)


def fine_tune_rows(weight, bias, rows: Sequence[int], embeddings, targets, steps: int = 50,
                   lr: float = 0.1, momentum: float = 0.9, ctx=None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Train the head rows ``rows`` (weights and biases) by full-batch SGD with momentum on the
    class-balanced softmax cross-entropy (:func:`balanced_cross_entropy`), the other rows fixed.

    Parameters
    ----------
    weight : array-like, (C + 1, D)
        The starting head (row 0: background).
    bias : array-like, (C + 1,)
    rows : sequence of int
        The rows that train.
    embeddings : array-like, (M, D)
        Fixed embeddings of the examples: positives of the registered classes, replayed
        positives of the trained ones and background anchors.
    targets : array-like of int, (M,)
        Their head rows (0: background).
    steps : int
        0 leaves the head as it is.
    lr, momentum : float
        The defaults (50 steps at 0.1) kept more of 8 and 9's AP than 200 at 0.5 when they were
        registered from 5 boxes (docs/open_set.md).
    ctx : mx.Context, optional
        Default: the CPU.

    Returns
    -------
    (weight, bias) : (numpy.ndarray of float64 (C + 1, D), numpy.ndarray of float64 (C + 1,))
        The rows not in ``rows`` are the input's, exactly.

    Raises
    ------
    ValueError
        For shapes that disagree, or targets outside the head's rows.
    """
    ctx = ctx or mx.cpu()
    weight, bias = np.asarray(weight, np.float64), np.asarray(bias, np.float64)
    embeddings = np.asarray(embeddings, np.float32)
    targets = np.asarray(targets, np.int64)
    if (weight.ndim != 2 or bias.shape != weight.shape[:1] or embeddings.ndim != 2
            or embeddings.shape[1] != weight.shape[1] or targets.shape != embeddings.shape[:1]):
        raise ValueError(f"shapes disagree: weight {weight.shape}, bias {bias.shape}, "
                         f"embeddings {embeddings.shape}, targets {targets.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= len(weight)):
        raise ValueError(f"targets must be head rows in [0, {len(weight)})")
    counts = np.bincount(targets, minlength=len(weight))
    sample_weights = 1.0 / (counts[targets] * np.count_nonzero(counts))
    mask = np.zeros((len(weight), 1), np.float32)
    mask[list(rows)] = 1
    params = [mx.nd.array(weight, ctx), mx.nd.array(bias, ctx)]
    velocity = [p.zeros_like() for p in params]
    data = [mx.nd.array(embeddings, ctx), mx.nd.array(targets, ctx),
            mx.nd.array(sample_weights, ctx)]
    masks = [mx.nd.array(mask, ctx), mx.nd.array(mask[:, 0], ctx)]
    for p in params:
        p.attach_grad()
    for _ in range(steps if len(targets) else 0):
        with mx.autograd.record():
            logits = mx.nd.FullyConnected(data[0], params[0], params[1],
                                          num_hidden=len(weight))
            loss = balanced_cross_entropy(mx.nd, logits, data[1], data[2])
        loss.backward()
        for p, v, m in zip(params, velocity, masks):
            v[:] = momentum * v + p.grad * m
            p[:] = p - lr * v
    out_weight, out_bias = (p.asnumpy().astype(np.float64) for p in params)
    frozen = mask[:, 0] == 0
    out_weight[frozen], out_bias[frozen] = weight[frozen], bias[frozen]  # exactly, not float32
    return out_weight, out_bias
