"""Data: the offline digits data set, VOC-layout data sets with SSD transforms and loaders, checks.

Names are imported on first use, so that ``python -m gluon_ssdcl.data.digits`` (or ``.check``)
runs its module once, without runpy's "found in sys.modules" warning.
"""
import importlib as _importlib

_EXPORTS = {
    'digits': ('CLASSES', 'render_image', 'split_sources', 'mnist_sample', 'default_root',
               'parse_classes',
               'ensure_digits'),
    'datasets': ('BadDatasetError', 'VOCLayoutDetection', 'SSDTrainTransform', 'get_dataset',
                 'read_class_names', 'get_train_transform', 'get_val_transform', 'get_dataloader',
                 'get_val_loader'),
    'check': ('Problem', 'check_voc_folder', 'check_image', 'resolve_voc_root'),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(_importlib.import_module(f'.{_MODULE_OF[name]}', __name__), name)


def __dir__():
    return sorted(list(globals()) + __all__)
