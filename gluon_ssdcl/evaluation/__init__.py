"""A trained model over data sets: detections and mAP, the comparison table, class banks,
open-set and few-shot evaluations."""
from .class_banks import checkpoint_bank, fit_bank, register_class
from .compare import compare_classifiers, format_table
from .few_shot import few_shot_evaluation
from .inference import collect_detections, detection_map, detections_map
from .open_set import open_set_evaluation

__all__ = ['checkpoint_bank', 'fit_bank', 'register_class', 'compare_classifiers',
           'format_table', 'few_shot_evaluation', 'collect_detections', 'detection_map',
           'detections_map', 'open_set_evaluation']
