"""Model registry: ``get_model(name, **kwargs)`` and ``list_models()``.

Our names are GluonCV's SSD names with ``_center`` before the data set
(``ssd_300_vgg16_atrous_center_voc``); any other name is passed to GluonCV's own zoo.
"""
from functools import partial

import gluoncv
import mxnet as mx
from gluoncv.data import COCODetection, VOCDetection
from gluoncv.model_zoo.ssd.vgg_atrous import vgg16_atrous_300, vgg16_atrous_512

from .pretrained import shipped_checkpoint
from .ssd import TinyFeatures, get_ssd_center

__all__ = ['get_model', 'list_models', 'default_embed_hidden', 'default_weight_decay',
           'checkpoint_network', 'DIGIT_CLASSES', 'GLUONCV_WEIGHT_DECAY', 'ZOO_REVISION']

DIGIT_CLASSES = tuple(str(d) for d in range(10))

_RATIOS_6 = [[1, 2, 0.5]] + [[1, 2, 0.5, 3, 1.0 / 3]] * 3 + [[1, 2, 0.5]] * 2
_RATIOS_7 = [[1, 2, 0.5]] + [[1, 2, 0.5, 3, 1.0 / 3]] * 4 + [[1, 2, 0.5]] * 2
_SIZES_300_VOC = [30, 60, 111, 162, 213, 264, 315]
_SIZES_300 = [21, 45, 99, 153, 207, 261, 315]
_SIZES_512_VGG = [51.2, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6]
_SIZES_512 = [51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492]
_SIZES_512_RESNET_CUSTOM = [51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72]
_MOBILENET_OUTPUTS = ['relu22_fwd', 'relu26_fwd']
# digits at 256 px are 14-95 px (5th-95th percentile of sqrt(area)): a stride-8 first map
# and sizes from 20 px give 4 anchors of IoU >= 0.5 per digit (the 300 px presets: 1.2)
_SIZES_256_MOBILENET = [20, 36, 64, 96, 128, 176, 256]
_SIZES_256_SMALL = [20, 36, 64, 100, 150, 256]

# architecture name -> (base network, base size, features, filters, ratios, {dataset: sizes})
_ARCHITECTURES = {
    'ssd_300_vgg16_atrous': ('vgg16_atrous', 300, vgg16_atrous_300, None, _RATIOS_6,
                             {'voc': _SIZES_300_VOC, 'coco': _SIZES_300, 'custom': _SIZES_300}),
    'ssd_512_vgg16_atrous': ('vgg16_atrous', 512, vgg16_atrous_512, None, _RATIOS_7,
                             {'voc': _SIZES_512_VGG, 'custom': _SIZES_512_VGG}),
    'ssd_512_resnet50_v1': ('resnet50_v1', 512, ['stage3_activation5', 'stage4_activation2'],
                            [512, 512, 256, 256], _RATIOS_6,
                            {'voc': _SIZES_512, 'custom': _SIZES_512_RESNET_CUSTOM}),
    'ssd_512_mobilenet1.0': ('mobilenet1.0', 512, _MOBILENET_OUTPUTS, [512, 512, 256, 256],
                             _RATIOS_6, {'voc': _SIZES_512, 'custom': _SIZES_512}),
    'ssd_300_mobilenet0.25': ('mobilenet0.25', 300, _MOBILENET_OUTPUTS, [256, 256, 128, 128],
                              _RATIOS_6, {'voc': _SIZES_300, 'custom': _SIZES_300}),
    # small networks for CPU training on the offline digits data set and for tests
    # (ssd_256_plain, plain 3x3 convolutions, reached mAP 0.58 on digits in 3 CPU minutes where
    # ssd_256_mobilenet0.25 reached 0.15; ssd_256_small, the CPU default, trades its two first
    # convolutions for a patch stem and spends the time saved on a stride-8 convolution and
    # hidden embedding layers: measured in docs/results.md)
    'ssd_256_mobilenet0.25': ('mobilenet0.25', 256, ['relu10_fwd'] + _MOBILENET_OUTPUTS,
                              [256, 128, 128], _RATIOS_6,
                              {'digits': _SIZES_256_MOBILENET, 'custom': _SIZES_256_MOBILENET}),
    'ssd_256_small': (None, 256, partial(TinyFeatures, channels=(32, 64, 128, 128, 128, 128),
                                         extra_convs=(2, 1), patch_stem=True),
                      None, [[1, 2, 0.5]] * 5,
                      {'digits': _SIZES_256_SMALL, 'custom': _SIZES_256_SMALL}),
    'ssd_256_plain': (None, 256, partial(TinyFeatures, channels=(32, 64, 128, 128, 128, 128),
                                         extra_convs=(1, 1)),
                      None, [[1, 2, 0.5]] * 5,
                      {'digits': _SIZES_256_SMALL, 'custom': _SIZES_256_SMALL}),
    'ssd_64_tiny': (None, 64, TinyFeatures, None, [[1, 2, 0.5]] * 3,
                    {'digits': [12, 24, 40, 64], 'custom': [12, 24, 40, 64]}),
}

_DATASET_CLASSES = {'voc': tuple(VOCDetection.CLASSES), 'coco': tuple(COCODetection.CLASSES),
                    'digits': DIGIT_CLASSES}


def _make(architecture, dataset, classes=None, **kwargs):
    network, base_size, features, filters, ratios, sizes = _ARCHITECTURES[architecture]
    if dataset == 'custom':
        if not classes:
            raise ValueError(f"{architecture}_center_custom needs classes=[...]")
    elif classes is not None and tuple(classes) != _DATASET_CLASSES[dataset]:
        raise ValueError(f"{architecture}_center_{dataset} has the {dataset} classes; "
                         f"use {architecture}_center_custom for classes={list(classes)}")
    classes = list(classes or _DATASET_CLASSES[dataset])
    return get_ssd_center(network, base_size, features, filters, sizes[dataset], ratios,
                          classes, **kwargs)


_MODELS = {f"{arch}_center_{dataset}": partial(_make, arch, dataset)
           for arch, spec in _ARCHITECTURES.items() for dataset in spec[-1]}

# channels of the hidden layer of the embedding heads when get_model is not told (default 0)
_EMBED_HIDDEN = {'ssd_256_small': 128}

# weight decay that gluon-ssdcl train gives a network when not told, where it is not GluonCV's
# 5e-4: measured on the digits set (docs/results.md; with BatchNorm after every convolution,
# weight decay sets the convolutions' effective learning rate)
_WEIGHT_DECAY = {'ssd_256_small': 5e-3}
GLUONCV_WEIGHT_DECAY = 5e-4

# Checkpoints record the zoo revision they were trained under. A name given to another network
# since then is read as the name the checkpoint's network has now: {revision: {then: now}}.
ZOO_REVISION = 2
_RENAMED = {2: {'ssd_256_small': 'ssd_256_plain'}}


def _architecture(name):
    return name.lower().split('_center_')[0]


def default_embed_hidden(name):
    """Channels of the embedding heads' hidden layer that ``get_model(name)`` builds (0: none)."""
    return _EMBED_HIDDEN.get(_architecture(name), 0)


def default_weight_decay(name):
    """The weight decay ``gluon-ssdcl train`` gives the network ``name`` when not told (5e-4,
    GluonCV's, but for ``ssd_256_small``)."""
    return _WEIGHT_DECAY.get(_architecture(name), GLUONCV_WEIGHT_DECAY)


def checkpoint_network(meta):
    """The registered name of the network a checkpoint's metadata (``network``, and
    ``zoo_revision``, 1 when missing) was trained as: ``ssd_256_small_center_digits`` of a
    revision-1 checkpoint is today's ``ssd_256_plain_center_digits``."""
    name = meta['network']
    for revision in range(meta.get('zoo_revision', 1) + 1, ZOO_REVISION + 1):
        architecture = _architecture(name)
        renamed = _RENAMED.get(revision, {}).get(architecture)
        if renamed:
            name = renamed + name[len(architecture):]
    return name


def list_models():
    """Names of the registered SSDCenter models, sorted."""
    return sorted(_MODELS)


def get_model(name, **kwargs):
    """Build a registered model by name; names we do not register go to GluonCV's zoo.

    Parameters
    ----------
    name : str
        For example ``ssd_300_vgg16_atrous_center_voc`` or ``ssd_256_mobilenet0.25_center_digits``.
    **kwargs
        ``classes`` (custom models), ``embed_dim`` (default 16), ``embed_hidden`` (default
        :func:`default_embed_hidden`: 128 for ``ssd_256_small``, else 0),
        ``pretrained_base`` (default False; True needs the base weights in ``root``), ``ctx``,
        ``root``, ``norm_layer``, ``norm_kwargs`` and GluonCV's other SSD arguments.
        ``pretrained=True``: the model with the weights shipped with the package (offline,
        checksums verified; see :mod:`gluon_ssdcl.model.pretrained`), on ``ctx`` (default the
        CPU), its files copied to ``root`` (default ``~/.gluon_ssdcl/models``); no other
        argument then.
    """
    key = name.lower()
    if key in _MODELS:
        if kwargs.pop('pretrained', False):
            return _pretrained(key, **kwargs)
        kwargs.setdefault('embed_hidden', default_embed_hidden(key))
        return _MODELS[key](**kwargs)
    if '_center_' in key:
        raise ValueError(f"Unknown model '{name}'. Available: {', '.join(list_models())}")
    return gluoncv.model_zoo.get_model(name, **kwargs)


def _pretrained(key, ctx=None, root=None, **kwargs):
    """The model ``key`` as :func:`get_model` builds it by default, with the weights shipped for
    it (``pretrained=True``); the checkpoint around them is for :func:`load_model`."""
    path = shipped_checkpoint(key, root)
    if kwargs:
        raise ValueError(f"{key} with pretrained=True is the shipped model as trained: "
                         f"{', '.join(sorted(kwargs))} cannot be given (reset_class changes "
                         "its classes)")
    net = _MODELS[key](embed_hidden=default_embed_hidden(key))
    try:  # the shipped weights are stored in float16
        net.load_parameters(path, ctx=ctx or mx.cpu(), cast_dtype=True)
    except (AssertionError, mx.base.MXNetError) as err:
        raise ValueError(f"{path} does not fit {key}: reinstall gluon_ssdcl "
                         f"({str(err).strip().splitlines()[0]})") from err
    return net
