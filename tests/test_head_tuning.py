"""Fine-tuning rows of the class head on fixed embeddings (few-shot registration)."""
import numpy as np
import pytest
from mxnet import nd

from gluon_ssdcl.engine.head_tuning import balanced_cross_entropy, fine_tune_rows, initial_rows


def test_balanced_cross_entropy_matches_numpy():
    rng = np.random.RandomState(0)
    logits = rng.randn(7, 4)
    targets = np.array([0, 0, 0, 1, 1, 3, 0])
    counts = np.bincount(targets, minlength=4)
    weights = 1 / (counts[targets] * 3)  # three classes present, each counts once
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -np.mean([log_p[targets == c, c].mean() for c in (0, 1, 3)])
    got = balanced_cross_entropy(nd, nd.array(logits), nd.array(targets), nd.array(weights))
    np.testing.assert_allclose(got.asscalar(), expected, rtol=1e-5)


def test_initial_rows_scale_the_center_to_the_trained_rows():
    weight = np.array([[0.0, 0], [3, 4], [0, 1], [9, 9]])
    bias = np.array([0.0, -1, -3, 7])
    new_weight, new_bias = initial_rows(weight, bias, [3], np.array([[0.0, 2.0]]), [1, 2])
    np.testing.assert_allclose(new_weight[3], [0, 3])  # norm (5 + 1) / 2
    assert new_bias[3] == -2
    np.testing.assert_array_equal(new_weight[:3], weight[:3])


def blobs(rng, center, count):
    return rng.randn(count, 2) * 0.3 + center


def test_fine_tuning_trains_only_the_chosen_row_and_learns_the_new_class():
    rng = np.random.RandomState(1)
    # background near (0, 0), trained class A (row 1) near (4, 0), new class (row 2) near (0, 4)
    weight = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    bias = np.array([0.0, -2.0, -10.0])  # the new row starts useless: never the argmax
    embeddings = np.vstack([blobs(rng, [0, 0], 300), blobs(rng, [4, 0], 200),
                            blobs(rng, [0, 4], 5)])
    targets = np.repeat([0, 1, 2], [300, 200, 5])
    logits = embeddings @ weight.T + bias
    assert (logits.argmax(axis=1)[-5:] != 2).all()
    tuned_weight, tuned_bias = fine_tune_rows(weight, bias, [2], embeddings, targets)
    np.testing.assert_array_equal(tuned_weight[:2], weight[:2])
    np.testing.assert_array_equal(tuned_bias[:2], bias[:2])
    assert not np.allclose(tuned_weight[2], weight[2])
    tests = np.vstack([blobs(rng, [0, 0], 50), blobs(rng, [4, 0], 50), blobs(rng, [0, 4], 50)])
    predicted = (tests @ tuned_weight.T + tuned_bias).argmax(axis=1)
    np.testing.assert_array_equal(predicted, np.repeat([0, 1, 2], 50))


def test_fine_tuning_checks_shapes_and_targets():
    with pytest.raises(ValueError, match='shapes disagree'):
        fine_tune_rows(np.zeros((3, 2)), np.zeros(3), [2], np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r'head rows in \[0, 3\)'):
        fine_tune_rows(np.zeros((3, 2)), np.zeros(3), [2], np.zeros((4, 2)), [0, 1, 2, 3])
    weight, bias = fine_tune_rows(np.ones((3, 2)), np.ones(3), [2], np.zeros((0, 2)), [])
    np.testing.assert_array_equal(weight, 1)  # nothing to learn from: unchanged
