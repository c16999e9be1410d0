"""Checkpoints: the weights a GluonCV user loads, and beside them the training state.

A checkpoint ``<stem>`` (e.g. ``runs/<run>_best``) is two files:

- ``<stem>.params``: the network's weights, exactly the file of ``Block.save_parameters``, so
  ``net.load_parameters(path)`` reads it into ``get_model(meta['network'],
  classes=meta['classes'], embed_dim=meta['embed_dim'])`` as GluonCV's ``train_ssd.py`` files;
- ``<stem>.state``: an ``nd.save`` dictionary of the ``centers`` (C, D), both trainers' states
  and a JSON ``meta`` record as uint8 (epoch, best mAP, seed, mode, network, classes,
  embed_dim, data shape, data set, flags, history, and the SHA-256 of the weights file it goes
  with, checked when loading).

Both are written atomically (the state first); nothing with NaN or infinite values is loaded.
``python -m gluon_ssdcl.checkpoint --convert OLD.params`` converts a one-file checkpoint of
gluon_ssdcl 0.1.
"""
import json
import os
import tempfile
from typing import NamedTuple, Optional

import mxnet as mx
import numpy as np

from ..utils.files import atomic_path, file_sha256

__all__ = ['Checkpoint', 'checkpoint_stem', 'save_checkpoint', 'load_checkpoint', 'restore',
           'LoadedModel', 'load_model', 'convert_checkpoint', 'REQUIRED_META']

_NET = 'net.'  # prefix of the weights in a one-file checkpoint of gluon_ssdcl 0.1


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` reads back; ``path`` is its weights file."""
    net_params: dict
    centers: Optional[mx.nd.NDArray]
    net_trainer_states: Optional[bytes]
    center_trainer_states: Optional[bytes]
    meta: dict
    path: str


def checkpoint_stem(path: str, default: str = 'last') -> str:
    """The stem of a checkpoint named by either of its files or by its run's prefix.

    ``runs/x_last.params`` and ``runs/x_last.state`` give ``runs/x_last``; a prefix
    ``runs/x`` gives ``runs/x_<default>`` ('last' or 'best'; 'best' falls back to 'last'
    when the run has no best file).
    """
    root, ext = os.path.splitext(path)
    if ext in ('.params', '.state'):
        return root
    if default == 'best' and not os.path.isfile(f'{path}_best.params'):
        default = 'last'
    return f'{path}_{default}'


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


def _write(stem, weights, state, meta):
    """Write ``<stem>.params`` (``weights``: name -> array) and ``<stem>.state`` (``state``
    plus ``meta`` with the weights' SHA-256) atomically, the state file first."""
    with atomic_path(stem + '.params') as weights_tmp:
        mx.nd.save(weights_tmp, weights)
        meta = {**meta, 'params_sha256': file_sha256(weights_tmp)}
        with atomic_path(stem + '.state') as state_tmp:
            mx.nd.save(state_tmp, {**state, 'meta': _to_array(json.dumps(meta).encode())})


def save_checkpoint(path, net, center_loss, meta, net_trainer=None, center_trainer=None):
    """Write a checkpoint: ``<stem>.params`` (the weights) and ``<stem>.state``.

    Parameters
    ----------
    path : str
        Either file of the checkpoint, e.g. ``<prefix>_last.params``.
    net : SSDCenter
    center_loss : CenterLoss
        Holder of the centers.
    meta : dict
        JSON-serialisable record (epoch, best_map, seed, mode, network, classes, ...).
    net_trainer, center_trainer : gluon.Trainer, optional
    """
    # pylint: disable=protected-access
    weights = {name: param._reduce() for name, param in net._collect_params_with_prefix().items()}
    state = {'centers': center_loss.centers.weight._reduce()}
    for key, trainer in (('net_trainer', net_trainer), ('center_trainer', center_trainer)):
        if trainer is not None:
            state[key] = _to_array(_trainer_bytes(trainer))
    _write(checkpoint_stem(path), weights, state, meta)


def _read(path, what):
    """The ``nd.save`` dictionary in ``path``; ValueError naming it when it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        arrays = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ValueError(f"{path} is not a readable {what}: {err}") from err
    if not isinstance(arrays, dict):
        raise ValueError(f"{path} is not a gluon_ssdcl {what}")
    broken = sorted(name for name, array in arrays.items()
                    if array.dtype != np.uint8 and not np.isfinite(array.asnumpy()).all())
    if broken:
        raise ValueError(f"{path} holds NaN or infinite values in {len(broken)} arrays "
                         f"({', '.join(broken[:3])}, ...): it comes from a diverged run")
    return arrays


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`, named by either file or its run's
    prefix (then the last one).

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file: missing, unreadable, not a gluon_ssdcl checkpoint, a one-file
        checkpoint of gluon_ssdcl 0.1 (with the command that converts it), weights that are not
        the state's, or NaN or infinite weights.
    """
    stem = checkpoint_stem(path)
    weights = _read(stem + '.params', 'weights file')
    if 'meta' in weights:
        raise ValueError(f"{stem}.params is a one-file checkpoint of gluon_ssdcl 0.1: convert "
                         f"it with python -m gluon_ssdcl.checkpoint --convert {stem}.params")
    if not os.path.isfile(stem + '.state'):
        raise FileNotFoundError(f"{stem}.state, the training state of {stem}.params, does not "
                                "exist (the weights alone load with net.load_parameters)")
    state = _read(stem + '.state', 'training state')
    if 'meta' not in state:
        raise ValueError(f"{stem}.state is not a gluon_ssdcl training state (no metadata)")
    meta = json.loads(_to_bytes(state['meta']))
    if meta.pop('params_sha256', None) != file_sha256(stem + '.params'):
        raise ValueError(f"{stem}.params and {stem}.state are from different saves (an "
                         "interrupted save?): use another checkpoint of the run")
    trainers = [_to_bytes(state[k]) if k in state else None
                for k in ('net_trainer', 'center_trainer')]
    return Checkpoint(weights, state.get('centers'), *trainers, meta, stem + '.params')


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


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns: the network, the holder of its centers and the
    checkpoint (``checkpoint.meta`` has the classes, mode, data set, flags and history)."""
    net: object
    center_loss: object
    checkpoint: Checkpoint

    @property
    def classes(self):
        """The class names, in the order of the class ids."""
        return self.checkpoint.meta['classes']

    @property
    def centers(self):
        """(C, D) learned centers."""
        return self.center_loss.centers.weight.data()


def load_model(path, ctx=None):
    """Rebuild the network and centers a checkpoint was trained with, ready for inference.

    Parameters
    ----------
    path : str
        Either file of a checkpoint, or its run's save prefix (then its best checkpoint, or its
        last when it has no best).
    ctx : list of mx.Context, optional
        Default: the CPU.

    Returns
    -------
    LoadedModel
        ``(net, center_loss, checkpoint)``, with ``classes`` and ``centers``.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file: missing or unreadable, metadata without one of :data:`REQUIRED_META`,
        weights that do not fit the recorded network (see :func:`load_checkpoint`).
    """
    from ..losses.center import CenterLoss  # pylint: disable=import-outside-toplevel
    from ..model.zoo import get_model  # pylint: disable=import-outside-toplevel
    ctx = ctx or [mx.cpu()]
    checkpoint = load_checkpoint(checkpoint_stem(path, default='best') + '.params')
    meta = checkpoint.meta
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"{checkpoint.path} lacks {', '.join(missing)} in its metadata")
    net = get_model(meta['network'], classes=meta['classes'], embed_dim=meta['embed_dim'],
                    pretrained_base=False)
    center_loss = CenterLoss(len(meta['classes']), meta['embed_dim'])
    center_loss.initialize(ctx=ctx)
    restore(checkpoint, net, center_loss, ctx=ctx)
    return LoadedModel(net, center_loss, checkpoint)


def convert_checkpoint(path):
    """Rewrite a one-file checkpoint of gluon_ssdcl 0.1 (``net.<name>`` arrays, centers,
    trainers and ``meta`` in ``path``) as this version's two files; returns their stem."""
    arrays = _read(path, 'checkpoint')
    if 'meta' not in arrays:
        raise ValueError(f"{path} is not a one-file checkpoint of gluon_ssdcl 0.1 (no metadata)")
    weights = {k[len(_NET):]: v for k, v in arrays.items() if k.startswith(_NET)}
    state = {k: v for k, v in arrays.items() if k in ('centers', 'net_trainer', 'center_trainer')}
    stem = checkpoint_stem(path)
    _write(stem, weights, state, json.loads(_to_bytes(arrays['meta'])))
    return stem
