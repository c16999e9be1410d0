"""The network: GluonCV's SSD with a center-embedding head, and the model names that build it."""
from .ssd import SSDCenter, TinyFeatures, get_ssd_center, initialize_params
from .zoo import DIGIT_CLASSES, get_model, list_models

__all__ = ['SSDCenter', 'TinyFeatures', 'get_ssd_center', 'initialize_params', 'get_model',
           'list_models', 'DIGIT_CLASSES']
