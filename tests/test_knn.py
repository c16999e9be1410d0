"""Tests of gluon_ssdcl.embeddings.knn: k-NN and nearest-center classification against brute
force."""
import mxnet as mx
import numpy as np
import pytest

from gluon_ssdcl.embeddings.knn import (knn_classifier, knn_predict, nearest_center_predict,
                                        sample_gallery)


def brute_force_knn(gallery, labels, queries, k):
    """One query at a time: k nearest by a full sort, majority vote, ties by summed distance."""
    predictions = []
    for query in queries:
        distances = np.sqrt(((gallery - query) ** 2).sum(axis=1))
        nearest = np.argsort(distances)[:k]
        votes, sums = {}, {}
        for index in nearest:
            votes[labels[index]] = votes.get(labels[index], 0) + 1
            sums[labels[index]] = sums.get(labels[index], 0.0) + distances[index]
        top = max(votes.values())
        predictions.append(min((sums[c], c) for c in votes if votes[c] == top)[1])
    return np.array(predictions)


def test_knn_separates_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    gallery = np.concatenate([c + rng.normal(0, 0.5, (20, 2)) for c in centers])
    labels = np.repeat([7, 3, 5], 20)  # any integers
    queries = centers + rng.normal(0, 0.5, (3, 2))
    prediction = knn_predict(gallery, labels, queries, k=5)
    assert prediction.dtype == np.int64 and prediction.tolist() == [7, 3, 5]


def test_knn_tie_goes_to_smaller_summed_distance():
    query = np.zeros((1, 2))
    # class 0: distances 1 and 3 (sum 4); class 1: distances 1.5 and 2 (sum 3.5); far class 2
    gallery = np.array([[1, 0], [0, 3], [-1.5, 0], [0, -2], [20, 20]], dtype=float)
    labels = np.array([0, 0, 1, 1, 2])
    assert knn_predict(gallery, labels, query, k=4).tolist() == [1]
    assert knn_predict(gallery, labels, query, k=1).tolist() == [0]
    assert knn_predict(gallery, labels, query, k=3).tolist() == [1]  # 2 votes beat the nearest
    # equal votes and equal sums: the smaller label
    symmetric = np.array([[1, 0], [-1, 0]], dtype=float)
    assert knn_predict(symmetric, np.array([4, 2]), query, k=2).tolist() == [2]


def test_knn_k1_is_nearest_neighbour():
    rng = np.random.default_rng(1)
    gallery, queries = rng.normal(size=(200, 4)), rng.normal(size=(50, 4))
    labels = rng.integers(0, 6, 200)
    nearest = ((queries[:, None] - gallery[None]) ** 2).sum(-1).argmin(axis=1)
    assert np.array_equal(knn_predict(gallery, labels, queries, k=1), labels[nearest])


def test_knn_chunking_and_brute_force_agree():
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(300, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    queries = rng.normal(size=(130, 3)).astype(np.float32)
    whole = knn_predict(gallery, labels, queries, k=7, chunk=100000)
    assert np.array_equal(knn_predict(gallery, labels, queries, k=7, chunk=16), whole)
    assert np.array_equal(knn_predict(gallery, labels, queries, k=7, chunk=5), whole)
    assert np.array_equal(whole, brute_force_knn(gallery, labels, queries, 7))


def test_knn_accepts_ndarrays_and_empty_queries():
    gallery = mx.nd.array([[0, 0], [5, 5]])
    assert knn_predict(gallery, mx.nd.array([0, 1], dtype='int32'),
                       mx.nd.array([[4, 4]]), k=1).tolist() == [1]
    assert knn_predict(gallery.asnumpy(), [0, 1], np.zeros((0, 2)), k=1).shape == (0,)


@pytest.mark.parametrize('gallery, labels, queries, k, chunk', [
    (np.zeros((3, 2)), [0, 1, 2], np.zeros((1, 2)), 0, 10),      # k < 1
    (np.zeros((3, 2)), [0, 1, 2], np.zeros((1, 2)), 4, 10),      # k > G
    (np.zeros((3, 2)), [0, 1], np.zeros((1, 2)), 1, 10),         # labels length
    (np.zeros((3, 2)), [0.0, 1.0, 2.0], np.zeros((1, 2)), 1, 10),  # float labels
    (np.zeros((3, 2)), [0, 1, 2], np.zeros((1, 3)), 1, 10),      # dimension mismatch
    (np.zeros(3), [0, 1, 2], np.zeros((1, 1)), 1, 10),           # gallery not 2-D
    (np.zeros((0, 2)), [], np.zeros((1, 2)), 1, 10),             # empty gallery
    (np.zeros((3, 2)), [0, 1, 2], np.zeros((1, 2)), 1, 0),       # chunk < 1
])
def test_knn_rejects_bad_input(gallery, labels, queries, k, chunk):
    with pytest.raises(ValueError):
        knn_predict(gallery, np.asarray(labels), queries, k=k, chunk=chunk)


def test_nearest_center_predict():
    centers = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    queries = np.array([[0.5, 0.5], [3.0, 1.0], [1.0, 3.5], [2.0, 0.0]])  # the last: a tie
    assert nearest_center_predict(centers, queries).tolist() == [0, 1, 2, 0]
    assert nearest_center_predict(mx.nd.array(centers), queries).tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError):
        nearest_center_predict(centers, np.zeros((1, 3)))


def test_sample_gallery_is_capped_and_reproducible():
    embeddings = np.arange(200, dtype=np.float32).reshape(100, 2)
    labels = np.arange(100)
    sample, sample_labels = sample_gallery(embeddings, labels, 30, seed=3)
    assert sample.shape == (30, 2) and len(set(sample_labels)) == 30
    assert np.all(np.diff(sample_labels) > 0)  # original order
    assert np.array_equal(sample, embeddings[sample_labels])
    again, _ = sample_gallery(embeddings, labels, 30, seed=3)
    other, _ = sample_gallery(embeddings, labels, 30, seed=4)
    assert np.array_equal(sample, again) and not np.array_equal(sample, other)
    whole, whole_labels = sample_gallery(embeddings, labels, 100, seed=3)
    assert whole is embeddings and whole_labels is labels
    with pytest.raises(ValueError):
        sample_gallery(embeddings, labels, 0)
    with pytest.raises(ValueError):
        sample_gallery(embeddings, labels[:5], 10)


def test_knn_classifier_lowers_k_to_the_gallery_size(caplog):
    gallery, labels = np.array([[0.0], [1.0], [10.0]]), np.array([0, 0, 1])
    classify = knn_classifier(gallery, labels, k=50)
    assert 'using k=3' in caplog.text
    # with k = 3 the two class-0 neighbours outvote the nearest (class 1)
    assert classify(np.array([[9.0]])).tolist() == [0]
    assert knn_classifier(gallery, labels, k=1)(np.array([[9.0]])).tolist() == [1]
