"""How well embeddings separate the classes: per-class compactness and the confusion rates of
confusable classes (pure NumPy; inputs may be NDArrays)."""
from __future__ import annotations

import itertools
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..utils.arrays import as_numpy

__all__ = ['compactness', 'confusion_rates', 'auroc', 'rejected_at_recall']



def compactness(embeddings, labels, centers, class_names: Sequence[str]) -> Dict[str, dict]:
    """Per class: how close its embeddings lie to its center, against how far the nearest other
    center is.

    Parameters
    ----------
    embeddings : array-like, (M, D)
    labels : array-like of int, (M,)
        Class ids in ``[0, C)``.
    centers : array-like, (C, D)
        Row ``j`` is the center of class ``j``.
    class_names : sequence of str
        The C class names, the keys of the result.

    Returns
    -------
    dict
        ``{name: {'distance': d, 'ratio': d / nearest}}``, ``d`` the mean Euclidean distance of
        the class's embeddings to its center, ``nearest`` the distance from its center to the
        nearest other center; a class without embeddings has None for both (and ``ratio`` is
        None with a single class or coinciding centers). The smaller the ratio, the more compact
        and apart the class.
    """
    embeddings = as_numpy(embeddings).astype(np.float64)
    labels = as_numpy(labels).astype(np.int64)
    centers = as_numpy(centers).astype(np.float64)
    if centers.shape != (len(class_names), embeddings.shape[1]) or labels.shape != (
            len(embeddings),):
        raise ValueError(f"need embeddings (M, D), labels (M,) and centers "
                         f"({len(class_names)}, D); got {embeddings.shape}, {labels.shape} "
                         f"and {centers.shape}")
    between = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    np.fill_diagonal(between, np.inf)
    result = {}
    for j, name in enumerate(class_names):
        members = embeddings[labels == j]
        distance = float(np.linalg.norm(members - centers[j], axis=1).mean()) if len(
            members) else None
        nearest = between[j].min()
        ratio = distance / nearest if distance is not None and 0 < nearest < np.inf else None
        result[name] = {'distance': distance, 'ratio': ratio}
    return result


def confusion_rates(labels, predictions, class_names: Sequence[str],
                    groups: Sequence[Sequence[str]]
                    ) -> Dict[str, Optional[float]]:
    """How often one class of a confusable group is labelled as another of the same group.

    Parameters
    ----------
    labels, predictions : array-like of int, (M,)
        True and predicted class ids (indices into ``class_names``).
    class_names : sequence of str
    groups : sequence of sequences of str
        Classes that look alike (for the digits data set, its ``CONFUSABLE_DIGITS``); groups
        with a name not in ``class_names`` are left out.

    Returns
    -------
    dict
        ``{'a->b': rate}`` for every ordered pair of distinct classes in a group: the share of
        the samples of class a predicted as b (None when class a has no sample).
    """
    labels, predictions = as_numpy(labels), as_numpy(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in shape: {labels.shape} and "
                         f"{predictions.shape}")
    index = {name: i for i, name in enumerate(class_names)}
    rates = {}
    for group in groups:
        if not all(name in index for name in group):
            continue
        for true, predicted in itertools.permutations(group, 2):
            members = labels == index[true]
            rates[f'{true}->{predicted}'] = (
                float(np.mean(predictions[members] == index[predicted])) if members.any()
                else None)
    return rates


def auroc(negatives, positives) -> Optional[float]:
    """Area under the ROC curve of a score meant to be higher for ``positives``.

    The probability that a random positive scores above a random negative, ties counting one
    half (the Mann-Whitney U statistic over ``len(negatives) * len(positives)``).

    Parameters
    ----------
    negatives : array-like, (N,)
        Scores of the negatives (e.g. known-class detections).
    positives : array-like, (P,)
        Scores of the positives (e.g. unknown objects).

    Returns
    -------
    float or None
        In [0, 1]; None when either set is empty.
    """
    negatives = as_numpy(negatives).astype(np.float64).ravel()
    positives = as_numpy(positives).astype(np.float64).ravel()
    if not len(negatives) or not len(positives):
        return None
    scores = np.concatenate([negatives, positives])
    order = np.argsort(scores, kind='mergesort')
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank (1-based) of each group of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    positive_ranks = ranks[len(negatives):].sum()
    u = positive_ranks - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(negatives) * len(positives)))


def rejected_at_recall(negatives, positives, recall: float = 0.95
                       ) -> Tuple[Optional[float], Optional[float]]:
    """The threshold that keeps ``recall`` of the negatives (score <= threshold), and the
    fraction of the positives above it (rejected).

    Parameters
    ----------
    negatives : array-like, (N,)
        Scores of what should be kept (known-class true positives).
    positives : array-like, (P,)
        Scores of what should be rejected (unknown objects).
    recall : float
        In (0, 1]: the threshold is the ``recall`` quantile of the negatives (NumPy's
        'higher' method, so at least that fraction of them is kept).

    Returns
    -------
    (threshold, rejected) : (float or None, float or None)
        None when either set is empty.
    """
    negatives = as_numpy(negatives).astype(np.float64).ravel()
    positives = as_numpy(positives).astype(np.float64).ravel()
    if not 0 < recall <= 1:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    if not len(negatives) or not len(positives):
        return None, None
    threshold = float(np.quantile(negatives, recall, method='higher'))
    return threshold, float(np.mean(positives > threshold))
