"""Open-set scores computed from detections' embeddings: higher means more likely unknown.

Beside the class bank's own score (distance to the nearest center over its radius,
:func:`~gluon_ssdcl.embeddings.class_bank.unknown_scores`), a :class:`ScoreModel` holds what
three post-hoc scores of a trained detector need, fitted on the bank's gallery of training
positives (and registered examples):

- ``energy`` (Liu et al. 2020): ``-logsumexp`` of the class head's logits of the known classes
  (background left out); the logits are ``weight @ e + bias``, the model's class head;
- ``cosine``: one minus the largest cosine similarity of the embedding to a class mean (the
  nearest class mean in angle: the embedding's direction, not its length, as in k-NN on
  normalised features, Sun et al. 2022);
- ``mahalanobis`` (Lee et al. 2018): the smallest squared Mahalanobis distance of the
  embedding to a class mean, with one covariance shared by the classes (the within-class
  scatter, scikit-learn's ``EmpiricalCovariance``);
- ``gaussian`` (class-conditional Gaussians on the logits, as GMM-Det): minus the largest
  log-likelihood of the logits under a Gaussian per class (scikit-learn's ``LedoitWolf`` on the
  class's logits; the classes' shared within-class covariance for one with fewer than
  :data:`MIN_CLASS_SAMPLES` examples).

Each score has a threshold: the bank's quantile (0.95 by default) of the scores of the trained
classes' gallery embeddings, so that a detection above it is unknown, as a detection beyond its
nearest center's radius is. Pure NumPy and scikit-learn.
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional

import numpy as np

from ..utils.arrays import as_numpy
from .class_bank import ClassBank, class_means, unknown_scores

__all__ = ['SCORES', 'ScoreModel', 'fit_scores', 'logits', 'energy', 'cosine', 'mahalanobis',
           'gaussian', 'unknown_score', 'is_unknown', 'REJECTION_RULES', 'rejection_rule']

SCORES = ('energy', 'cosine', 'mahalanobis', 'gaussian')
REJECTION_RULES = ('center',) + SCORES  # what may label a detection unknown
MIN_CLASS_SAMPLES = 32  # fewer examples: the class's logit Gaussian uses the shared covariance


class ScoreModel(NamedTuple):
    """What the post-hoc scores need (C model classes, K bank classes, D dimensions).

    Attributes
    ----------
    weight : numpy.ndarray of float64, (C + 1, D)
        The class head (row 0: background).
    bias : numpy.ndarray of float64, (C + 1,)
    known : numpy.ndarray of int64, (J,)
        The trained model classes (with a center, not registered), ids in ``[0, C)``: the
        logits the energy sums over.
    means : numpy.ndarray of float64, (K, D)
        Class means of the embeddings; NaN rows for classes without a center.
    precision : numpy.ndarray of float64, (D, D)
        Inverse of the shared within-class covariance of the embeddings.
    logit_means : numpy.ndarray of float64, (K, C + 1)
        Class means of the logits; NaN rows for classes without a center.
    logit_precisions : numpy.ndarray of float64, (K, C + 1, C + 1)
    logit_logdets : numpy.ndarray of float64, (K,)
        Log-determinants of the classes' logit covariances.
    thresholds : dict
        ``{score name: float}``: above it a detection is unknown.
    """
    weight: np.ndarray
    bias: np.ndarray
    known: np.ndarray
    means: np.ndarray
    precision: np.ndarray
    logit_means: np.ndarray
    logit_precisions: np.ndarray
    logit_logdets: np.ndarray
    thresholds: Dict[str, float]


def logits(model: ScoreModel, embeddings) -> np.ndarray:
    """(M, C + 1) class-head logits of (M, D) embeddings."""
    embeddings = as_numpy(embeddings).astype(np.float64).reshape(-1, model.weight.shape[1])
    return embeddings @ model.weight.T + model.bias


def energy(model: ScoreModel, embeddings) -> np.ndarray:
    """(M,) ``-logsumexp`` of the known classes' logits."""
    known = logits(model, embeddings)[:, 1 + model.known]
    top = known.max(axis=1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(known - top).sum(axis=1)))


def _unit_rows(values: np.ndarray) -> np.ndarray:
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


def cosine(model: ScoreModel, embeddings) -> np.ndarray:
    """(M,) one minus the largest cosine similarity to a class mean (in [0, 2])."""
    embeddings = as_numpy(embeddings).astype(np.float64).reshape(-1, model.means.shape[1])
    means = model.means[~np.isnan(model.means).any(axis=1)]
    return 1 - (_unit_rows(embeddings) @ _unit_rows(means).T).max(axis=1, initial=-1)


def _smallest_quadratic(values, means, precisions, offsets) -> np.ndarray:
    """(M,) ``min_k (v - m_k)^T P_k (v - m_k) + o_k`` over the rows ``k`` of ``means`` without
    NaN; ``precisions`` (K, E, E), ``offsets`` (K,)."""
    best = np.full(len(values), np.inf)
    for mean, precision, offset in zip(means, precisions, offsets):
        if np.isnan(mean).any():
            continue
        diff = values - mean
        best = np.minimum(best, np.einsum('md,de,me->m', diff, precision, diff) + offset)
    return best


def mahalanobis(model: ScoreModel, embeddings) -> np.ndarray:
    """(M,) smallest squared Mahalanobis distance to a class mean (shared covariance)."""
    embeddings = as_numpy(embeddings).astype(np.float64).reshape(-1, model.means.shape[1])
    count = len(model.means)
    return _smallest_quadratic(embeddings, model.means,
                               np.broadcast_to(model.precision, (count,) + model.precision.shape),
                               np.zeros(count))


def gaussian(model: ScoreModel, embeddings) -> np.ndarray:
    """(M,) minus the largest class log-likelihood of the logits, up to a constant:
    ``min_k ((z - m_k)^T P_k (z - m_k) + log det S_k) / 2``."""
    return 0.5 * _smallest_quadratic(logits(model, embeddings), model.logit_means,
                                     model.logit_precisions, model.logit_logdets)


SCORE_FUNCTIONS = {'energy': energy, 'cosine': cosine, 'mahalanobis': mahalanobis,
                   'gaussian': gaussian}


def unknown_score(model: ScoreModel, name: str, embeddings) -> np.ndarray:
    """(M,) score ``name`` (one of :data:`SCORES`) of (M, D) embeddings."""
    if name not in SCORE_FUNCTIONS:
        raise ValueError(f"unknown open-set score {name!r}: choose from {', '.join(SCORES)}")
    return SCORE_FUNCTIONS[name](model, embeddings)


def is_unknown(model: ScoreModel, name: str, embeddings) -> np.ndarray:
    """(M,) bool: score ``name`` of (M, D) embeddings above its threshold."""
    return unknown_score(model, name, embeddings) > model.thresholds[name]


def rejection_rule(bank: ClassBank, model: Optional[ScoreModel], name: str
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """``(M, D) embeddings -> (M,) bool``, True for unknown: beyond the nearest center's
    radius (``'center'``, ``model`` unused) or a score of :data:`SCORES` above its threshold."""
    if name == 'center':
        return lambda embeddings: unknown_scores(bank, embeddings)[1] > 1
    if name not in SCORES:
        raise ValueError(f"unknown rejection rule {name!r}: choose from "
                         f"{', '.join(REJECTION_RULES)}")
    return lambda embeddings: is_unknown(model, name, embeddings)


def fit_scores(bank: ClassBank, weight, bias) -> ScoreModel:
    """The :class:`ScoreModel` of a bank and the model's class head.

    Parameters
    ----------
    bank : ClassBank
        Its gallery gives the class means (registered classes': their examples'), and its
        trained classes' positives the shared covariances and the thresholds at
        ``bank.quantile``.
    weight : array-like, (C + 1, D)
        The class head's weight (row 0: background).
    bias : array-like, (C + 1,)

    Raises
    ------
    ValueError
        For a class head whose shape does not fit the bank's embeddings.
    """
    # pylint: disable=import-outside-toplevel
    from sklearn.covariance import EmpiricalCovariance, LedoitWolf
    weight = as_numpy(weight).astype(np.float64)
    bias = as_numpy(bias).astype(np.float64).reshape(-1)
    dim = bank.centers.shape[1]
    if weight.ndim != 2 or weight.shape[1] != dim or bias.shape != weight.shape[:1]:
        raise ValueError(f"need a class head of weight (C + 1, {dim}) and bias (C + 1,), got "
                         f"{weight.shape} and {bias.shape}")
    num_model = weight.shape[0] - 1
    trained = bank.active.copy()
    trained[[bank.classes.index(name) for name in bank.registered]] = False
    usable = bank.active[bank.gallery_labels]
    gallery = bank.gallery[usable].astype(np.float64)
    labels = bank.gallery_labels[usable]
    own = trained[labels]  # the trained classes' positives: covariances and thresholds
    means = class_means(gallery, labels, len(bank.classes))
    shared = EmpiricalCovariance(assume_centered=True).fit((gallery - means[labels])[own])
    gallery_logits = gallery @ weight.T + bias
    logit_means = class_means(gallery_logits, labels, len(bank.classes))
    logit_shared = LedoitWolf(assume_centered=True).fit(
        (gallery_logits - logit_means[labels])[own])
    precisions = np.tile(logit_shared.precision_, (len(bank.classes), 1, 1))
    covariances = np.tile(logit_shared.covariance_, (len(bank.classes), 1, 1))
    for j in np.flatnonzero(bank.active):
        rows = gallery_logits[labels == j]
        if len(rows) >= MIN_CLASS_SAMPLES:
            fitted = LedoitWolf(assume_centered=True).fit(rows - logit_means[j])
            precisions[j], covariances[j] = fitted.precision_, fitted.covariance_
    logdets = np.array([np.linalg.slogdet(c)[1] for c in covariances])
    model = ScoreModel(weight, bias, np.flatnonzero(trained[:num_model]), means,
                       shared.precision_, logit_means, precisions, logdets, {})
    return model._replace(thresholds={
        name: float(np.quantile(unknown_score(model, name, gallery[own]), bank.quantile))
        for name in SCORES})
