"""Tests of gluon_ssdcl.embeddings.metrics against hand-computed cases."""
import mxnet as mx
import numpy as np
import pytest

from gluon_ssdcl.data.digitset import CONFUSABLE_DIGITS
from gluon_ssdcl.embeddings.metrics import compactness, confusion_rates

DIGITS = [str(d) for d in range(10)]


def test_compactness_by_hand():
    centers = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 10.0]])  # 0-1: 5, 0-2: 10, 1-2: 6.708
    embeddings = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    labels = np.array([0, 0, 1])
    got = compactness(mx.nd.array(embeddings), labels, centers, ['a', 'b', 'c'])
    assert got['a'] == pytest.approx({'distance': 1.5, 'ratio': 0.3})
    assert got['b'] == pytest.approx({'distance': 0.0, 'ratio': 0.0})
    assert got['c'] == {'distance': None, 'ratio': None}


def test_compactness_of_one_class_has_no_ratio():
    got = compactness(np.array([[1.0, 1.0]]), np.array([0]), np.zeros((1, 2)), ['a'])
    assert got['a'] == pytest.approx({'distance': np.sqrt(2), 'ratio': None})


def test_compactness_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match='centers'):
        compactness(np.zeros((2, 2)), np.zeros(2, int), np.zeros((3, 3)), ['a', 'b', 'c'])


def test_confusion_rates_by_hand():
    labels = np.array([4, 4, 4, 4, 9, 9, 3, 5, 8, 1])
    predictions = np.array([4, 9, 9, 0, 4, 9, 5, 5, 3, 1])
    rates = confusion_rates(labels, predictions, DIGITS, CONFUSABLE_DIGITS)
    assert rates['4->9'] == 0.5 and rates['9->4'] == 0.5
    assert rates['3->5'] == 1.0 and rates['3->8'] == 0.0 and rates['8->3'] == 1.0
    assert rates['5->3'] == 0.0 and rates['1->7'] == 0.0
    assert rates['7->1'] is None  # no 7 among the labels
    assert len(rates) == 2 + 6 + 2


def test_confusion_rates_skip_groups_of_other_class_names():
    assert confusion_rates(np.array([0, 1]), np.array([1, 1]), ['cat', 'dog'],
                           CONFUSABLE_DIGITS) == {}
    assert confusion_rates([0, 1], [1, 0], ['cat', 'dog'], groups=[('cat', 'dog')]) == {
        'cat->dog': 1.0, 'dog->cat': 1.0}
