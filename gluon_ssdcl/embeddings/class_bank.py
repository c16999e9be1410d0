"""Open-set labelling with the centers: per-class radii, the unknown score, registered classes.

A :class:`ClassBank` holds, for every class a detection may be labelled with, a center and a
radius, plus a k-NN gallery of labelled embeddings:

- the model's classes: the center is the learned one (softmax-center and center modes) or the
  mean of the class's training embeddings (softmax mode, whose centers are not trained); the
  radius is the ``quantile`` of the distances of the class's training positives to that center.
  A class without training positives (e.g. held out with ``--digits-exclude``) has no center
  (NaN row) and is never assigned until it is registered;
- registered classes (:func:`~gluon_ssdcl.evaluation.class_banks.register_class`,
  ``gluon-ssdcl register``): the center is the mean embedding of the positive anchors of a few
  example boxes, the radius the median radius of the trained classes (a few examples cannot
  measure one). A new name is appended to the class list (ids after the model's); a model
  class without a center (held out) takes its own id; a registered name is replaced only when
  asked (``replace``).

The unknown score of an embedding is its distance to the nearest center over that center's
radius; beyond 1 (outside the radius) the detection is labelled unknown (:data:`UNKNOWN_ID`
-2, :data:`UNKNOWN_NAME`). The k-NN distance score is the mean distance to the ``k`` nearest
gallery embeddings.

The bank of a checkpoint ``<stem>.params`` is saved beside it as ``<stem>.openset.npz``
(:func:`bank_path`), all or nothing, with the SHA-256 of the weights it was computed with (a
bank of other weights is refused, and so is a damaged one: truncated, or NaN where a class has
a center, :func:`check_bank`). Pure NumPy: fitting a bank with a model is
:mod:`gluon_ssdcl.evaluation.class_banks`'s.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..utils.arrays import as_numpy
from ..utils.files import atomic_path
from .knn import center_distances, knn_distances, knn_predict

__all__ = ['UNKNOWN_ID', 'UNKNOWN_NAME', 'DEFAULT_QUANTILE', 'ClassBank', 'class_means',
           'class_radii', 'unknown_scores', 'knn_scores', 'assign', 'make_bank',
           'registration_index', 'with_class', 'check_bank', 'bank_path', 'save_bank',
           'load_bank']

UNKNOWN_ID = -2
UNKNOWN_NAME = 'unknown'
DEFAULT_QUANTILE = 0.95  # see the README's open-set section: the quantiles measured
BANK_SUFFIX = '.openset.npz'


class ClassBank(NamedTuple):
    """Centers, radii and a k-NN gallery for open-set labelling (K classes, D dimensions).

    Attributes
    ----------
    classes : list of str
        The K class names: the model's, then registered new ones.
    centers : numpy.ndarray of float64, (K, D)
        NaN rows for classes without a center.
    radii : numpy.ndarray of float64, (K,)
        NaN for classes without a center.
    registered : dict
        ``{name: number of example boxes}`` of the registered classes.
    gallery : numpy.ndarray of float32, (G, D)
        Labelled embeddings for k-NN (training positives plus registered examples).
    gallery_labels : numpy.ndarray of int64, (G,)
        Their ids into ``classes``.
    quantile : float
        The quantile the trained classes' radii were taken at.
    center_source : str
        ``'learned'`` or ``'means'``: where the trained classes' centers come from.
    params_sha256 : str
        The weights the embeddings were computed with ('' when unknown).
    """
    classes: List[str]
    centers: np.ndarray
    radii: np.ndarray
    registered: Dict[str, int]
    gallery: np.ndarray
    gallery_labels: np.ndarray
    quantile: float
    center_source: str
    params_sha256: str = ''

    @property
    def active(self) -> np.ndarray:
        """(K,) bool: the classes that have a center (and can be assigned)."""
        return ~np.isnan(self.radii)


def class_means(embeddings, labels, num_classes: int) -> np.ndarray:
    """(C, D) float64 mean embedding of each class; NaN rows for classes without embeddings.

    Parameters
    ----------
    embeddings : array-like, (M, D)
    labels : array-like of int, (M,)
        Class ids in ``[0, num_classes)``.
    num_classes : int
    """
    embeddings = as_numpy(embeddings).astype(np.float64)
    labels = as_numpy(labels).astype(np.int64)
    means = np.full((num_classes, embeddings.shape[1]), np.nan)
    for j in np.unique(labels):
        means[j] = embeddings[labels == j].mean(axis=0)
    return means


def class_radii(embeddings, labels, centers, quantile: float = DEFAULT_QUANTILE) -> np.ndarray:
    """Per class, the ``quantile`` of the distances of its embeddings to its own center.

    Parameters
    ----------
    embeddings : array-like, (M, D)
    labels : array-like of int, (M,)
        Class ids in ``[0, C)``.
    centers : array-like, (C, D)
        Row ``j`` is the center of class ``j``.
    quantile : float
        In (0, 1] (NumPy's linear interpolation between order statistics).

    Returns
    -------
    numpy.ndarray of float64, (C,)
        NaN for a class without embeddings or without a center.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    embeddings = as_numpy(embeddings).astype(np.float64)
    labels = as_numpy(labels).astype(np.int64)
    centers = as_numpy(centers).astype(np.float64)
    radii = np.full(len(centers), np.nan)
    for j in np.unique(labels):
        if not np.isnan(centers[j]).any():
            distances = np.linalg.norm(embeddings[labels == j] - centers[j], axis=1)
            radii[j] = np.quantile(distances, quantile)
    return radii


def unknown_scores(bank: ClassBank, embeddings) -> Tuple[np.ndarray, np.ndarray]:
    """The nearest center of each embedding and its distance over that center's radius.

    Parameters
    ----------
    bank : ClassBank
    embeddings : array-like, (M, D)

    Returns
    -------
    ids : numpy.ndarray of int64, (M,)
        Index into ``bank.classes`` of the nearest center with a radius (Euclidean; the smaller
        id on equal distances).
    scores : numpy.ndarray of float64, (M,)
        Distance to it over its radius: above 1 means outside the class.
    """
    active = np.flatnonzero(bank.active)
    if not len(active):
        raise ValueError("the class bank has no class with a center")
    embeddings = as_numpy(embeddings).astype(np.float64).reshape(-1, bank.centers.shape[1])
    if not len(embeddings):
        return np.zeros(0, np.int64), np.zeros(0)
    distances = center_distances(bank.centers[active], embeddings)
    nearest = distances.argmin(axis=1)
    ids = active[nearest]
    return ids.astype(np.int64), distances[np.arange(len(ids)), nearest] / bank.radii[ids]


def knn_scores(bank: ClassBank, embeddings, k: int = 5) -> np.ndarray:
    """(M,) mean distance of each embedding to its ``k`` nearest gallery embeddings
    (``k`` lowered to the gallery size)."""
    embeddings = as_numpy(embeddings).reshape(-1, bank.gallery.shape[1])
    if not len(embeddings):
        return np.zeros(0)
    return knn_distances(bank.gallery, embeddings, min(k, len(bank.gallery))).mean(axis=1)


def assign(bank: ClassBank, embeddings, threshold: Optional[float] = 1.0,
           by: str = 'center', k: int = 5) -> np.ndarray:
    """Class ids of embeddings, :data:`UNKNOWN_ID` for those outside their nearest center.

    Parameters
    ----------
    bank : ClassBank
    embeddings : array-like, (M, D)
    threshold : float or None
        Largest unknown score (distance / radius) still labelled; None: never unknown.
    by : str
        ``'center'``: the nearest center; ``'knn'``: the k-NN vote over the gallery (the
        unknown rule still uses the nearest center's score).
    k : int
        Neighbours of the k-NN vote.

    Returns
    -------
    numpy.ndarray of int64, (M,)
        Indices into ``bank.classes``, or :data:`UNKNOWN_ID`.
    """
    if by not in ('center', 'knn'):
        raise ValueError(f"by must be 'center' or 'knn', got {by!r}")
    ids, scores = unknown_scores(bank, embeddings)
    if by == 'knn' and len(ids):
        ids = knn_predict(bank.gallery, bank.gallery_labels, embeddings,
                          k=min(k, len(bank.gallery)))
    if threshold is not None:
        ids = np.where(scores > threshold, UNKNOWN_ID, ids)
    return ids.astype(np.int64)


def make_bank(classes: Sequence[str], embeddings, labels, centers=None,
              quantile: float = DEFAULT_QUANTILE, params_sha256: str = '') -> ClassBank:
    """A bank of the model's classes from their training embeddings.

    Parameters
    ----------
    classes : sequence of str
        The C class names.
    embeddings : array-like, (M, D)
        Training positives' embeddings; they also become the k-NN gallery.
    labels : array-like of int, (M,)
        Their class ids in ``[0, C)``.
    centers : array-like, (C, D), optional
        The learned centers; default: the class means of ``embeddings``.
    quantile : float
        Of the radii (:func:`class_radii`).
    params_sha256 : str
        The weights the embeddings come from.

    Returns
    -------
    ClassBank
        Classes without embeddings get no center (NaN) and no radius.
    """
    embeddings = as_numpy(embeddings).astype(np.float32)
    labels = as_numpy(labels).astype(np.int64)
    if embeddings.ndim != 2 or not len(embeddings) or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"need (M, D) embeddings with M >= 1 and (M,) labels, got "
                         f"{embeddings.shape} and {labels.shape}")
    means = class_means(embeddings, labels, len(classes))
    chosen = means if centers is None else as_numpy(centers).astype(np.float64).copy()
    chosen[np.isnan(means).any(axis=1)] = np.nan  # no training positives: not a known class
    return ClassBank(list(classes), chosen, class_radii(embeddings, labels, chosen, quantile),
                     {}, embeddings, labels, float(quantile),
                     'means' if centers is None else 'learned', params_sha256)


def registration_index(bank: ClassBank, name: str, replace: bool = False) -> int:
    """The id class ``name`` gets when registered: its own for a model class without a center
    or (with ``replace``) a registered class, the next one for a new name.

    Raises
    ------
    ValueError
        For a class trained with positives (it has a center of its own), or one registered
        already without ``replace``.
    """
    if name not in bank.classes:
        return len(bank.classes)
    index = bank.classes.index(name)
    if name in bank.registered:
        if not replace:
            raise ValueError(f"class {name!r} is already registered (from "
                             f"{bank.registered[name]} boxes): --replace replaces it")
    elif bank.active[index]:
        raise ValueError(f"class {name!r} was trained: registration adds classes the model has "
                         "no center for")
    return index


def with_class(bank: ClassBank, name: str, embeddings, num_examples: int,
               replace: bool = False) -> ClassBank:
    """The bank with class ``name`` registered from its examples' embeddings.

    The center is the mean of ``embeddings``, the radius the median radius of the classes
    that had training positives, and the embeddings join the k-NN gallery. A model class
    without a center (held out of training) is placed at its id, a registered class replaced
    there when ``replace``; a new name is appended.

    Parameters
    ----------
    bank : ClassBank
    name : str
    embeddings : array-like, (M, D)
        At least one row: the positive anchors of the example boxes.
    num_examples : int
        How many boxes they come from (recorded).
    replace : bool
        Whether a registered class ``name`` may be replaced.

    Raises
    ------
    ValueError
        For a class trained with positives (it has a center of its own), a registered one
        without ``replace``, no embeddings or non-finite ones.
    """
    index = registration_index(bank, name, replace)
    embeddings = as_numpy(embeddings).astype(np.float32).reshape(-1, bank.centers.shape[1])
    if not len(embeddings):
        raise ValueError(f"no positive anchor matched the example boxes of {name!r}: boxes too "
                         "small or too large for the network's anchors?")
    if not np.isfinite(embeddings).all():
        raise ValueError(f"the example boxes of {name!r} have non-finite embeddings: the "
                         "model's weights are NaN or infinite?")
    classes = list(bank.classes) + ([name] if index == len(bank.classes) else [])
    trained = bank.active.copy()
    trained[[bank.classes.index(n) for n in bank.registered]] = False
    centers = np.vstack([bank.centers, np.full((1, bank.centers.shape[1]), np.nan)])[
        :len(classes)]
    radii = np.r_[bank.radii, np.nan][:len(classes)]
    centers[index] = embeddings.astype(np.float64).mean(axis=0)
    radii[index] = np.median(bank.radii[trained]) if trained.any() else np.nan
    keep = bank.gallery_labels != index
    return bank._replace(
        classes=classes, centers=centers, radii=radii,
        registered={**bank.registered, name: int(num_examples)},
        gallery=np.concatenate([bank.gallery[keep], embeddings]),
        gallery_labels=np.concatenate([bank.gallery_labels[keep],
                                       np.full(len(embeddings), index, np.int64)]))


def check_bank(bank: ClassBank) -> None:
    """Refuse a bank that cannot label embeddings.

    Every class has either a finite center and a finite radius >= 0, or no center (a NaN row)
    and a NaN radius; at least one class has a center; the gallery's embeddings are finite and
    its labels ids of the classes.

    Raises
    ------
    ValueError
        Saying what is wrong, with the class's name.
    """
    centers, radii = np.asarray(bank.centers), np.asarray(bank.radii)
    gallery, labels = np.asarray(bank.gallery), np.asarray(bank.gallery_labels)
    num_classes = len(bank.classes)
    if (centers.ndim != 2 or centers.shape[0] != num_classes or radii.shape != (num_classes,)
            or gallery.ndim != 2 or gallery.shape[1:] != centers.shape[1:]
            or labels.shape != gallery.shape[:1]):
        raise ValueError(f"shapes disagree: {num_classes} classes, centers {centers.shape}, "
                         f"radii {radii.shape}, gallery {gallery.shape}, labels {labels.shape}")
    for name, center, radius in zip(bank.classes, centers, radii):
        if np.isnan(radius):
            if not np.isnan(center).all():
                raise ValueError(f"class {name!r} has a center but a NaN radius")
        elif not (np.isfinite(radius) and radius >= 0):
            raise ValueError(f"class {name!r} has radius {radius}")
        elif not np.isfinite(center).all():
            raise ValueError(f"class {name!r} has a radius but a non-finite center")
    if np.isnan(radii).all():
        raise ValueError("no class has a center")
    if not np.isfinite(gallery).all():
        raise ValueError("the gallery has non-finite embeddings")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"gallery labels outside the {num_classes} classes")


def bank_path(params: str) -> str:
    """``<stem>.openset.npz`` beside the checkpoint ``<stem>.params`` (or ``.state``)."""
    root, ext = os.path.splitext(params)
    return (root if ext in ('.params', '.state') else params) + BANK_SUFFIX


def save_bank(bank: ClassBank, path: str) -> None:
    """Write ``bank`` to ``path`` (an ``.npz``) atomically."""
    info = {'classes': bank.classes, 'registered': bank.registered, 'quantile': bank.quantile,
            'center_source': bank.center_source, 'params_sha256': bank.params_sha256}
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, centers=bank.centers, radii=bank.radii, gallery=bank.gallery,
                     gallery_labels=bank.gallery_labels, info=np.frombuffer(
                         json.dumps(info).encode(), dtype=np.uint8))


def load_bank(path: str, params_sha256: Optional[str] = None) -> ClassBank:
    """Read a bank written by :func:`save_bank`.

    Parameters
    ----------
    path : str
    params_sha256 : str, optional
        When given, the bank must have been computed with these weights.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file: missing, unreadable (truncated), damaged (:func:`check_bank`), or
        computed with other weights.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class bank {path} does not exist")
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
        info = json.loads(arrays['info'].tobytes())
        bank = ClassBank(list(info['classes']), arrays['centers'], arrays['radii'],
                         dict(info['registered']), arrays['gallery'], arrays['gallery_labels'],
                         float(info['quantile']), info['center_source'], info['params_sha256'])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable class bank: {err}") from err
    if params_sha256 is not None and bank.params_sha256 != params_sha256:
        raise ValueError(f"{path} was computed with other weights than the checkpoint's (it "
                         "was retrained?): remove it to compute it again")
    try:
        check_bank(bank)
    except ValueError as err:
        raise ValueError(f"{path} is not a usable class bank: {err}") from err
    return bank
