"""k-nearest-neighbour and nearest-center classification of embeddings, in pure NumPy.

Used to label SSD detections by their embeddings (:mod:`gluon_ssdcl.evaluation`,
:mod:`gluon_ssdcl.deploy.detect`) and LeNet++ features (:mod:`gluon_ssdcl.experiments.lenet`).
Inputs may be NumPy arrays or MXNet NDArrays (copied to the host).
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Tuple

import numpy as np

from ..utils.arrays import as_numpy

__all__ = ['knn_predict', 'knn_classifier', 'knn_distances', 'center_distances',
           'nearest_center_predict', 'sample_gallery']

logger = logging.getLogger(__name__)


def _keep_smallest(scores: np.ndarray, indices: np.ndarray,
                   k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k smallest scores of each row, and their indices (both (M, k), in no order)."""
    if scores.shape[1] <= k:
        return scores, indices
    keep = np.argpartition(scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, keep, axis=1), np.take_along_axis(indices, keep, axis=1)


def _ranking_scores(queries: np.ndarray, gallery: np.ndarray,
                    gallery_sq: np.ndarray) -> np.ndarray:
    """(M, G) ``||g||^2 - 2 q.g``: the squared distances less ``||q||^2``, which is the same
    along a row, so rows rank the gallery by distance. ``gallery_sq``: (G,) ``||g||^2``."""
    scores = queries @ gallery.T
    scores *= -2.0
    scores += gallery_sq
    return scores


def _k_nearest(gallery: np.ndarray, gallery_sq: np.ndarray, queries: np.ndarray, k: int,
               chunk: int) -> Tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices (both (M, k), in no particular order) of the k nearest
    gallery rows of each query, scanning the gallery ``chunk`` rows at a time.

    ``gallery_sq`` is the (G,) squared norms of the gallery rows.
    """
    best_scores = np.empty((len(queries), 0))
    best_indices = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(gallery), chunk):
        stop = min(start + chunk, len(gallery))
        scores = _ranking_scores(queries, gallery[start:stop], gallery_sq[start:stop])
        indices = np.broadcast_to(np.arange(start, stop), scores.shape)
        scores, indices = _keep_smallest(scores, indices, k)
        best_scores, best_indices = _keep_smallest(
            np.concatenate([best_scores, scores], axis=1),
            np.concatenate([best_indices, indices], axis=1), k)
    queries_sq = np.einsum('ij,ij->i', queries, queries)[:, None]
    return np.maximum(best_scores + queries_sq, 0.0), best_indices


def _check_points(gallery: np.ndarray, queries: np.ndarray, name: str) -> None:
    """ValueError unless ``gallery`` is (G, D) with G >= 1 and ``queries`` is (M, D)."""
    if gallery.ndim != 2 or not len(gallery):
        raise ValueError(f"{name} must have shape ({name[0].upper()}, D) with at least one row, "
                         f"got {gallery.shape}")
    if queries.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries must have shape (M, {gallery.shape[1]}) like the {name}, "
                         f"got {queries.shape}")


def _vote(codes: np.ndarray, distances: np.ndarray, num_classes: int) -> np.ndarray:
    """Majority vote of (M, k) neighbour class codes in [0, num_classes); among the classes
    tied for the most votes, the smallest summed distance wins, then the smallest code."""
    num_queries = len(codes)
    flat = (np.arange(num_queries)[:, None] * num_classes + codes).ravel()
    size = num_queries * num_classes
    votes = np.bincount(flat, minlength=size).reshape(num_queries, num_classes)
    summed = np.bincount(flat, weights=distances.ravel(),
                         minlength=size).reshape(num_queries, num_classes)
    summed[votes < votes.max(axis=1, keepdims=True)] = np.inf
    return summed.argmin(axis=1)


def knn_predict(gallery, gallery_labels, queries, k: int = 5, chunk: int = 2048) -> np.ndarray:
    """Classify queries by a majority vote of their k nearest gallery rows (Euclidean).

    Distances are computed in float64 blocks of at most ``chunk`` queries by ``chunk`` gallery
    rows, as ``||q||^2 - 2 q.g + ||g||^2``, so memory stays O(chunk^2) whatever the sizes.

    Ties: when several classes have the most votes among the k neighbours, the class whose
    tied neighbours have the smallest summed (Euclidean) distance to the query wins; if that
    is also equal, the smallest label. Neighbours exactly as far as the k-th one may be
    chosen in any order.

    Parameters
    ----------
    gallery : array-like or NDArray, (G, D)
        Labelled embeddings.
    gallery_labels : array-like or NDArray of int, (G,)
        Their class ids (any integers).
    queries : array-like or NDArray, (M, D)
        Embeddings to classify.
    k : int
        Number of neighbours, 1 <= k <= G.
    chunk : int
        Block size of the distance computation (rows of queries and of the gallery).

    Returns
    -------
    numpy.ndarray of int64, (M,)
        The predicted class of each query, one of ``gallery_labels``.
    """
    gallery = as_numpy(gallery).astype(np.float64)
    gallery_labels = as_numpy(gallery_labels)
    queries = as_numpy(queries).astype(np.float64)
    _check_points(gallery, queries, 'gallery')
    if gallery_labels.shape != gallery.shape[:1]:
        raise ValueError(f"gallery_labels must have shape ({len(gallery)},), "
                         f"got {gallery_labels.shape}")
    if not np.issubdtype(gallery_labels.dtype, np.integer):
        raise ValueError(f"gallery_labels must be integers, got dtype {gallery_labels.dtype}")
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k must be between 1 and the gallery size {len(gallery)}, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    classes, codes = np.unique(gallery_labels, return_inverse=True)
    gallery_sq = np.einsum('ij,ij->i', gallery, gallery)
    predictions = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        distances, indices = _k_nearest(gallery, gallery_sq, block, k, chunk)
        predictions[start:start + len(block)] = classes[
            _vote(codes[indices], np.sqrt(distances), len(classes))]
    return predictions


def knn_distances(gallery, queries, k: int = 5, chunk: int = 2048) -> np.ndarray:
    """Euclidean distances of each query to its k nearest gallery rows, nearest first.

    Computed as :func:`knn_predict` finds the neighbours (float64 blocks of ``chunk`` rows).

    Parameters
    ----------
    gallery : array-like or NDArray, (G, D)
    queries : array-like or NDArray, (M, D)
    k : int
        1 <= k <= G.
    chunk : int
        Block size of the distance computation.

    Returns
    -------
    numpy.ndarray of float64, (M, k)
        Row i: the distances of query i to its k nearest gallery rows, ascending.
    """
    gallery = as_numpy(gallery).astype(np.float64)
    queries = as_numpy(queries).astype(np.float64)
    _check_points(gallery, queries, 'gallery')
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k must be between 1 and the gallery size {len(gallery)}, got {k}")
    gallery_sq = np.einsum('ij,ij->i', gallery, gallery)
    out = np.empty((len(queries), k))
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk]
        squared, _ = _k_nearest(gallery, gallery_sq, block, k, chunk)
        out[start:start + len(block)] = np.sqrt(np.sort(squared, axis=1))
    return out


def center_distances(centers, queries) -> np.ndarray:
    """Euclidean distance of every query to every center.

    Parameters
    ----------
    centers : array-like or NDArray, (C, D)
    queries : array-like or NDArray, (M, D)

    Returns
    -------
    numpy.ndarray of float64, (M, C)
    """
    centers = as_numpy(centers).astype(np.float64)
    queries = as_numpy(queries).astype(np.float64)
    _check_points(centers, queries, 'centers')
    centers_sq = np.einsum('ij,ij->i', centers, centers)
    squared = _ranking_scores(queries, centers, centers_sq)
    squared += np.einsum('ij,ij->i', queries, queries)[:, None]
    return np.sqrt(np.maximum(squared, 0.0))


def nearest_center_predict(centers, queries) -> np.ndarray:
    """Class of the nearest center (Euclidean) for each query.

    Parameters
    ----------
    centers : array-like or NDArray, (C, D)
        Row ``j`` is the center of class ``j``, e.g. ``center_loss.centers.weight.data()``.
    queries : array-like or NDArray, (M, D)

    Returns
    -------
    numpy.ndarray of int64, (M,)
        Class ids in [0, C); the smaller id on equal distances.
    """
    centers = as_numpy(centers).astype(np.float64)
    queries = as_numpy(queries).astype(np.float64)
    _check_points(centers, queries, 'centers')
    centers_sq = np.einsum('ij,ij->i', centers, centers)
    return _ranking_scores(queries, centers, centers_sq).argmin(axis=1).astype(np.int64)


def sample_gallery(embeddings: np.ndarray, labels: np.ndarray, max_size: int,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """At most ``max_size`` rows drawn without replacement, reproducibly from ``seed``.

    Parameters
    ----------
    embeddings : numpy.ndarray, (G, D)
    labels : numpy.ndarray, (G,)
    max_size : int
        Cap on the number of rows, >= 1.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    (embeddings (G', D), labels (G',))
        The inputs themselves when ``G <= max_size``; otherwise ``G' = max_size`` rows kept in
        their original order.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be a positive integer, got {max_size}")
    if len(embeddings) != len(labels):
        raise ValueError(f"embeddings and labels differ in length: "
                         f"{len(embeddings)} != {len(labels)}")
    if len(embeddings) <= max_size:
        return embeddings, labels
    keep = np.sort(np.random.default_rng(seed).choice(len(embeddings), max_size, replace=False))
    return embeddings[keep], labels[keep]


def knn_classifier(gallery, gallery_labels, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """``classify(queries (M, D)) -> class ids (M,)``: :func:`knn_predict` over ``gallery``.

    ``k`` larger than the gallery is lowered to its size, with a logged warning.
    """
    if k > len(gallery):
        logger.warning("k-NN k=%d is more than the %d gallery embeddings; using k=%d",
                       k, len(gallery), len(gallery))
    return functools.partial(knn_predict, gallery, gallery_labels, k=min(k, len(gallery)))
