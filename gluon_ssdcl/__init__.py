"""gluon_ssdcl: GluonCV SSD object detection trained with center loss.

The library is import-only; the commands (``gluon-ssdcl train``, ``evaluate``, ``detect``,
``export``, ...) live in :mod:`gluon_ssdcl.commands`.
"""
import os

from .utils.cpus import available_cpus

# MXNet assumes hyper-threading and uses half the cores when OMP_NUM_THREADS is unset; on 2-core
# machines that halves GEMM speed. It must be set before mxnet is first imported.
os.environ.setdefault('OMP_NUM_THREADS', str(available_cpus()))

try:
    import mxnet  # noqa: F401  pylint: disable=unused-import
except ImportError as err:  # MXNet is an extra: the CPU and CUDA builds exclude each other
    raise ImportError("gluon_ssdcl needs MXNet 1.9.1: pip install 'gluon_ssdcl[cpu]', "
                      "or 'gluon_ssdcl[gpu]' for the CUDA 11.2 build") from err

from .engine.checkpoint import LoadedModel, load_model
from .losses import CenterLoss, LossTerms, Mode, MultiBoxCenterLoss
from .model import SSDCenter, get_model, get_ssd_center, initialize_params, list_models

__version__ = '0.3.0'

__all__ = ['CenterLoss', 'LoadedModel', 'load_model', 'LossTerms', 'Mode', 'MultiBoxCenterLoss',
           'SSDCenter', 'get_ssd_center', 'initialize_params', 'get_model', 'list_models',
           '__version__']
