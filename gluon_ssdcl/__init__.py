"""gluon_ssdcl: GluonCV SSD object detection trained with center loss.

The library is import-only; the commands (``gluon-ssdcl train``, ``evaluate``, ``detect``,
``export``, ...) live in :mod:`gluon_ssdcl.commands`.
"""
import importlib
import importlib.util
import os

from .utils.cpus import available_cpus

# MXNet assumes hyper-threading and uses half the cores when OMP_NUM_THREADS is unset; on 2-core
# machines that halves GEMM speed. It must be set before mxnet is first imported.
os.environ.setdefault('OMP_NUM_THREADS', str(available_cpus()))

# MXNet is an extra, as the CPU and CUDA builds exclude each other
if importlib.util.find_spec('mxnet') is None:
    raise ImportError("gluon_ssdcl needs MXNet 1.9.1: pip install 'gluon_ssdcl[cpu]', "
                      "or 'gluon_ssdcl[gpu]' for the CUDA 11.2 build")

__version__ = '0.3.0'

# the names below, with the module of each: imported on first use, so that starting a command
# does not wait for MXNet's import (seconds) before it can handle Ctrl-C
_EXPORTS = {'LoadedModel': 'engine.checkpoint', 'load_model': 'engine.checkpoint',
            'CenterLoss': 'losses', 'LossTerms': 'losses', 'Mode': 'losses',
            'MultiBoxCenterLoss': 'losses', 'SSDCenter': 'model', 'get_ssd_center': 'model',
            'initialize_params': 'model', 'get_model': 'model', 'list_models': 'model'}

__all__ = list(_EXPORTS) + ['__version__']


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f'.{_EXPORTS[name]}', __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
