"""Embeddings without a model (pure NumPy): k-NN and nearest-center labels, how well classes
separate, and the class bank of centers and radii for open-set labelling."""
from .class_bank import ClassBank, assign, load_bank, save_bank, unknown_scores
from .knn import knn_classifier, knn_predict, nearest_center_predict
from .metrics import auroc, compactness, confusion_rates, rejected_at_recall

__all__ = ['ClassBank', 'assign', 'load_bank', 'save_bank', 'unknown_scores', 'knn_classifier',
           'knn_predict', 'nearest_center_predict', 'auroc', 'compactness', 'confusion_rates',
           'rejected_at_recall']
