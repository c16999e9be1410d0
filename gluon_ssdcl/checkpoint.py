"""Checkpoints: one file with the network, the centers, both trainers' states and metadata.

A checkpoint is an MXNet ``nd.save`` dictionary: ``net.<name>`` arrays (the structural names of
``Block.save_parameters``), ``centers`` (C, D), the trainers' states and a JSON ``meta`` record
(epoch, best mAP, seed, mode, network, classes, embed_dim, data shape, flags) as uint8 arrays.
Saves are atomic: a temporary file in the same folder, then ``os.replace``.
"""
import json
import os
import tempfile
from typing import NamedTuple, Optional

import mxnet as mx
import numpy as np

from .files import atomic_path

__all__ = ['Checkpoint', 'save_checkpoint', 'load_checkpoint', 'restore', 'build_from_checkpoint',
           'REQUIRED_META']

_NET = 'net.'


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` reads back from the file ``path``."""
    net_params: dict
    centers: Optional[mx.nd.NDArray]
    net_trainer_states: Optional[bytes]
    center_trainer_states: Optional[bytes]
    meta: dict
    path: str


def _to_array(data: bytes):
    return mx.nd.array(np.frombuffer(data, dtype=np.uint8), dtype='uint8')


def _to_bytes(array):
    return array.asnumpy().astype(np.uint8).tobytes()


def _trainer_bytes(trainer):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'states')
        trainer.save_states(path)
        with open(path, 'rb') as f:
            return f.read()


def save_checkpoint(path, net, center_loss, meta, net_trainer=None, center_trainer=None):
    """Write a checkpoint atomically to ``path``; an interrupted save leaves the old file whole.

    Parameters
    ----------
    path : str
        Destination file, e.g. ``<prefix>_last.params``.
    net : SSDCenter
    center_loss : CenterLoss
        Holder of the centers.
    meta : dict
        JSON-serialisable record (epoch, best_map, seed, mode, network, classes, ...).
    net_trainer, center_trainer : gluon.Trainer, optional
    """
    # pylint: disable=protected-access
    arrays = {_NET + name: param._reduce()
              for name, param in net._collect_params_with_prefix().items()}
    arrays['centers'] = center_loss.centers.weight._reduce()
    arrays['meta'] = _to_array(json.dumps(meta).encode())
    for key, trainer in (('net_trainer', net_trainer), ('center_trainer', center_trainer)):
        if trainer is not None:
            arrays[key] = _to_array(_trainer_bytes(trainer))
    with atomic_path(path) as tmp:
        mx.nd.save(tmp, arrays)


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError, ValueError
        When the file is missing, is not a gluon_ssdcl checkpoint, or holds NaN or infinite
        weights.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        arrays = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ValueError(f"{path} is not a readable checkpoint: {err}") from err
    if not isinstance(arrays, dict) or 'meta' not in arrays:
        raise ValueError(f"{path} is not a gluon_ssdcl checkpoint (no metadata)")
    broken = [name for name, array in arrays.items()
              if array.dtype != np.uint8 and not np.isfinite(array.asnumpy()).all()]
    if broken:
        raise ValueError(f"{path} holds NaN or infinite values in {len(broken)} arrays "
                         f"({', '.join(sorted(broken)[:3])}, ...): it comes from a diverged run")
    net_params = {k[len(_NET):]: v for k, v in arrays.items() if k.startswith(_NET)}
    states = {k: _to_bytes(arrays[k]) if k in arrays else None
              for k in ('net_trainer', 'center_trainer')}
    return Checkpoint(net_params, arrays.get('centers'), states['net_trainer'],
                      states['center_trainer'], json.loads(_to_bytes(arrays['meta'])), path)


def _load_from_file(load, data):
    """Call ``load(path)`` on a temporary file holding ``data`` (bytes or a dict of arrays)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'data')
        if isinstance(data, dict):
            mx.nd.save(path, data)
        else:
            with open(path, 'wb') as f:
                f.write(data)
        load(path)


def restore(checkpoint, net, center_loss=None, net_trainer=None, center_trainer=None,
            ctx=None):
    """Load a :class:`Checkpoint` into the network, the centers and the trainers given.

    A checkpoint of other classes than ``net.classes`` (another data set's) starts a new run:
    the backbone, box and embedding heads are loaded; the rows of the class head and the
    centers of the classes both lists name are copied, the others are new
    (:meth:`~gluon_ssdcl.model.SSDCenter.reset_class`); the trainers cannot be restored then.

    Raises
    ------
    ValueError
        Naming the checkpoint's file, when its arrays do not fit the network or the centers.
    """
    ctx = ctx or [mx.cpu()]
    old_classes, new_classes = list(checkpoint.meta.get('classes', [])), list(net.classes)
    other_classes = bool(old_classes) and old_classes != new_classes
    if other_classes and (net_trainer or center_trainer):
        raise ValueError(f"{checkpoint.path} was trained on other classes ({old_classes}): it "
                         "can start a new run (--init-from), not continue one")
    if other_classes:
        net.reset_class(old_classes)
    try:
        _load_from_file(lambda path: net.load_parameters(path, ctx=ctx), checkpoint.net_params)
        if center_loss is not None and checkpoint.centers is not None:
            _set_centers(center_loss, checkpoint.centers, old_classes, new_classes)
    except (AssertionError, mx.base.MXNetError) as err:  # load_parameters asserts on names
        meta = checkpoint.meta
        raise ValueError(f"{checkpoint.path} does not fit the network ({meta.get('network')}, "
                         f"{len(old_classes)} classes, embed_dim "
                         f"{meta.get('embed_dim')}): {str(err).strip().splitlines()[0]}") from err
    if other_classes:
        net.reset_class(new_classes, reuse_weights=[c for c in new_classes if c in old_classes])
    for trainer, data in ((net_trainer, checkpoint.net_trainer_states),
                          (center_trainer, checkpoint.center_trainer_states)):
        if trainer is not None and data is not None:
            _load_from_file(trainer.load_states, data)


def _set_centers(center_loss, centers, old_classes, new_classes):
    """Load checkpoint ``centers`` (C_old, D) into ``center_loss`` (C_new, D): all of them for
    the same classes, else the rows of the classes both lists name."""
    weight = center_loss.centers.weight
    if not old_classes or old_classes == new_classes:
        weight.set_data(centers)
        return
    data = weight.data().copy()
    for new_index, name in enumerate(new_classes):
        if name in old_classes:
            data[new_index] = centers[old_classes.index(name)]
    weight.set_data(data)


REQUIRED_META = ('network', 'classes', 'embed_dim', 'mode', 'dataset')


def build_from_checkpoint(path, ctx=None):
    """Rebuild the network and centers a checkpoint was trained with, ready for inference.

    Returns
    -------
    (net, center_loss, checkpoint)

    Raises
    ------
    FileNotFoundError, ValueError
        Naming ``path``: missing or unreadable file, metadata without one of
        :data:`REQUIRED_META`, weights that do not fit the recorded network.
    """
    from .center_loss import CenterLoss  # pylint: disable=import-outside-toplevel
    from .model_zoo import get_model  # pylint: disable=import-outside-toplevel
    ctx = ctx or [mx.cpu()]
    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} in its metadata")
    net = get_model(meta['network'], classes=meta['classes'], embed_dim=meta['embed_dim'],
                    pretrained_base=False)
    center_loss = CenterLoss(len(meta['classes']), meta['embed_dim'])
    center_loss.initialize(ctx=ctx)
    restore(checkpoint, net, center_loss, ctx=ctx)
    return net, center_loss, checkpoint
