"""Data: the offline digits data set, VOC-layout data sets with SSD transforms and loaders,
checks."""
from .datasets import (BadDatasetError, SSDTrainTransform, VOCLayoutDetection, get_dataloader,
                       get_dataset, get_train_transform, get_val_loader, get_val_transform,
                       read_class_names)
from .digitset import (CLASSES, default_root, ensure_digits, mnist_sample, parse_classes,
                       render_image, split_sources)
from .voc_check import Problem, check_image, check_voc_folder, resolve_voc_root

__all__ = ['BadDatasetError', 'SSDTrainTransform', 'VOCLayoutDetection', 'get_dataloader',
           'get_dataset', 'get_train_transform', 'get_val_loader', 'get_val_transform',
           'read_class_names', 'CLASSES', 'default_root', 'ensure_digits', 'mnist_sample',
           'parse_classes', 'render_image', 'split_sources', 'Problem', 'check_image',
           'check_voc_folder', 'resolve_voc_root']
