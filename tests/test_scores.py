"""Post-hoc open-set scores (energy, Mahalanobis, logit Gaussians) against hand-computed answers
and independent NumPy / SciPy computations."""
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gluon_ssdcl.embeddings.class_bank import make_bank, with_class
from gluon_ssdcl.embeddings.scores import (SCORES, cosine, energy, fit_scores, gaussian, logits,
                                           mahalanobis, unknown_score)


def cross(center, a, b):
    """Four 2-D points at ``center`` +- (a, 0) and +- (0, b): within-class covariance
    diag(a^2 / 2, b^2 / 2) (divided by the count)."""
    center = np.asarray(center, np.float64)
    return center + np.array([[a, 0], [-a, 0], [0, b], [0, -b]], np.float64)


def cross_bank(classes=('a', 'b', 'held out')):
    embeddings = np.vstack([cross([0, 0], 2, 1), cross([10, 0], 2, 1)])
    labels = np.repeat([0, 1], 4)
    return make_bank(list(classes), embeddings, labels)


def identity_head(num_classes, dim):
    """A class head whose logits are the embedding's coordinates (row 0: background 0)."""
    weight = np.zeros((num_classes + 1, dim))
    weight[1:dim + 1, :] = np.eye(dim)[:num_classes]
    return weight, np.zeros(num_classes + 1)


def test_energy_of_known_logits_leaves_out_background_and_classes_without_a_center():
    bank = cross_bank()
    weight = np.array([[5.0, 5.0], [1, 0], [0, 1], [3, 3]])  # background, a, b, held out
    model = fit_scores(bank, weight, [0.0, 0.0, np.log(2.0), 0.0])
    # logits of (0, 0): background 0 (left out), a 0, b log 2, held out 0 (no center: left out)
    assert np.array_equal(model.known, [0, 1])
    np.testing.assert_allclose(energy(model, [[0.0, 0.0]]), [-np.log(1 + 2)])
    np.testing.assert_allclose(logits(model, [[1.0, 2.0]]), [[15, 1, 2 + np.log(2), 9]])
    # large logits do not overflow
    big = energy(model, [[1000.0, 1000.0]])
    np.testing.assert_allclose(big, [-(1000 + np.log(1 + 2 * np.exp(0)))], rtol=1e-12)


def test_mahalanobis_uses_the_shared_within_class_covariance():
    bank = cross_bank()
    weight, bias = identity_head(3, 2)
    model = fit_scores(bank, weight, bias)
    np.testing.assert_allclose(np.linalg.inv(model.precision), np.diag([2.0, 0.5]))
    queries = np.array([[1.0, 1.0], [9.0, -2.0], [5.0, 0.0]])
    # (dx^2 / 2 + dy^2 / 0.5) to the nearer mean (0, 0) or (10, 0)
    expected = [1 / 2 + 1 / 0.5, 1 / 2 + 4 / 0.5, 25 / 2]
    np.testing.assert_allclose(mahalanobis(model, queries), expected)
    assert np.isnan(model.means[2]).all()


def test_cosine_is_one_minus_the_best_cosine_to_a_class_mean():
    # class means (1, 0) and (0, 2); the held-out class has none
    bank = make_bank(['a', 'b', 'held out'],
                     np.vstack([cross([1, 0], 1, 1), cross([0, 2], 1, 1)]), np.repeat([0, 1], 4))
    model = fit_scores(bank, *identity_head(3, 2))
    queries = np.array([[3.0, 3.0], [5.0, 0.0], [-1.0, 0.0], [0.0, -0.5]])
    # nearest mean in angle: 45 degrees; along a's mean; opposite a, orthogonal to b; opposite b
    expected = [1 - np.sqrt(0.5), 0, 1, 1]
    np.testing.assert_allclose(cosine(model, queries), expected, atol=1e-12)


def test_gaussian_is_minus_the_best_class_log_likelihood_of_the_logits():
    rng = np.random.RandomState(0)
    scale = np.array([[1.0, 0.0], [0.8, 0.5]])
    embeddings = np.vstack([rng.randn(200, 2) @ scale + [4, 0], rng.randn(10, 2) + [0, 4]])
    labels = np.repeat([0, 1], [200, 10])
    bank = make_bank(['a', 'b'], embeddings, labels)
    weight = np.array([[0.5, -1.0], [1.0, 2.0], [-1.0, 0.5]])
    bias = np.array([0.1, -0.2, 0.3])
    model = fit_scores(bank, weight, bias)
    queries = rng.randn(7, 2) * 3
    z = queries @ weight.T + bias
    log_likelihoods = [multivariate_normal(model.logit_means[j], np.linalg.inv(
        model.logit_precisions[j])).logpdf(z) for j in range(2)]
    constant = 0.5 * 3 * np.log(2 * np.pi)
    np.testing.assert_allclose(gaussian(model, queries),
                               -np.max(log_likelihoods, axis=0) - constant, rtol=1e-8)
    # the class of 200 examples has its own covariance, the one of 10 the shared one
    own = embeddings[:200] @ weight.T + bias
    from sklearn.covariance import LedoitWolf
    np.testing.assert_allclose(model.logit_precisions[0], LedoitWolf(
        assume_centered=True).fit(own - own.mean(axis=0)).precision_)
    assert not np.allclose(model.logit_precisions[0], model.logit_precisions[1])


@pytest.mark.parametrize('name', SCORES)
def test_thresholds_keep_the_quantile_of_the_training_positives(name):
    rng = np.random.RandomState(1)
    embeddings = np.vstack([rng.randn(400, 3) + [3, 0, 0], rng.randn(400, 3) - [3, 0, 0]])
    bank = make_bank(['a', 'b'], embeddings, np.repeat([0, 1], 400), quantile=0.9)
    weight = np.array([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0]])  # logits x for a, -x for b
    model = fit_scores(bank, weight, np.zeros(3))
    inside = unknown_score(model, name, embeddings) <= model.thresholds[name]
    assert abs(inside.mean() - 0.9) < 0.005
    far = unknown_score(model, name, [[0.0, 0.0, 30.0]])
    assert far[0] > model.thresholds[name]


def test_registered_class_gets_a_mean_and_leaves_the_thresholds_alone():
    bank = cross_bank()
    model = fit_scores(bank, *identity_head(3, 2))
    registered = with_class(bank, 'held out', [[0.0, 8.0], [0.0, 10.0]], 2)
    after = fit_scores(registered, *identity_head(3, 2))
    np.testing.assert_allclose(after.means[2], [0, 9])
    np.testing.assert_allclose(after.means[:2], model.means[:2])
    assert after.thresholds == model.thresholds
    assert mahalanobis(after, [[0.0, 9.0]])[0] < mahalanobis(model, [[0.0, 9.0]])[0]


def test_bad_head_and_bad_score_name_are_refused():
    bank = cross_bank()
    with pytest.raises(ValueError, match=r'weight \(C \+ 1, 2\)'):
        fit_scores(bank, np.zeros((4, 3)), np.zeros(4))
    model = fit_scores(bank, *identity_head(3, 2))
    with pytest.raises(ValueError, match="'softmax'"):
        unknown_score(model, 'softmax', [[0.0, 0.0]])
