"""Checkpoints: the weights a GluonCV user loads, and beside them the training state.

A checkpoint ``<stem>`` (e.g. ``runs/<run>_best``) is two files:

- ``<stem>.params``: the network's weights, exactly the file of ``Block.save_parameters``, so
  ``net.load_parameters(path)`` reads it into ``get_model(checkpoint_network(meta),
  classes=meta['classes'], embed_dim=meta['embed_dim'], embed_hidden=meta['embed_hidden'])``
  as GluonCV's ``train_ssd.py`` files (``checkpoint_network``: the network's name, from
  ``network`` and ``zoo_revision``);
- ``<stem>.state``: an ``nd.save`` dictionary of the ``centers`` (C, D), both trainers' states
  and a JSON ``meta`` record as uint8 (epoch, best mAP, seed, mode, network, zoo_revision,
  classes, embed_dim, embed_hidden, data shape, data set, flags, history, and the SHA-256 of the
  weights file it goes with, checked when loading).

The two are committed as one unit (:func:`save_checkpoint`): however a save is interrupted,
the weights file has its state beside it (``<stem>.state``, or ``<stem>.state.prev`` kept while
the save was committed); nothing with NaN or infinite values is loaded.
``python -m gluon_ssdcl.checkpoint --convert OLD.params`` converts a one-file checkpoint of
gluon_ssdcl 0.1.
"""
import glob
import json
import os
import pickle
import re
import tempfile
from typing import List, NamedTuple, Optional

import mxnet as mx
import numpy as np

from ..utils.files import atomic_path, check_file, file_sha256, naming_failures

__all__ = ['Checkpoint', 'checkpoint_stem', 'run_prefix', 'run_checkpoints', 'save_checkpoint',
           'load_checkpoint', 'restore', 'LoadedModel', 'load_model', 'convert_checkpoint',
           'slim_checkpoint', 'REQUIRED_META', 'KEPT_STATE']

_NET = 'net.'  # prefix of the weights in a one-file checkpoint of gluon_ssdcl 0.1
KEPT_STATE = '.state.prev'  # <stem>.state.prev: the state kept while a save is committed
# <prefix>_last, <prefix>_best, <prefix>_<epoch>: the checkpoints of a run
_RUN_STEM = r'(?P<prefix>.+)_(last|best|\d{4,})'


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` reads back; ``path`` is its weights file, ``state_path``
    its state file."""
    net_params: dict
    centers: Optional[mx.nd.NDArray]
    net_trainer_states: Optional[bytes]
    center_trainer_states: Optional[bytes]
    meta: dict
    path: str
    state_path: str = ''


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


def run_prefix(path: str) -> str:
    """The save prefix of the run whose checkpoint ``path`` names (as
    :func:`checkpoint_stem`): ``runs/x_best.params`` and ``runs/x`` give ``runs/x``; a stem not
    named ``<prefix>_last``, ``_best`` or ``_<epoch>`` is its own prefix."""
    stem = checkpoint_stem(path)
    match = re.fullmatch(_RUN_STEM, stem)
    return match.group('prefix') if match else stem


def run_checkpoints(prefix: str) -> List[str]:
    """The checkpoint files of the run at save ``prefix`` (weights, states and kept states of
    ``<prefix>_last``, ``_best`` and ``_<epoch>``), sorted."""
    names = re.compile(re.escape(os.path.basename(prefix)) + r'_(last|best|\d{4,})'
                       r'\.(params|state|state\.prev)')
    return sorted(path for path in glob.glob(glob.escape(prefix) + '_*')
                  if names.fullmatch(os.path.basename(path)))


def _to_array(data: bytes):
    return mx.nd.array(np.frombuffer(data, dtype=np.uint8), dtype='uint8')


def _to_bytes(array):
    return array.asnumpy().astype(np.uint8).tobytes()


def _meta(arrays, path):
    """The JSON record ``arrays['meta']`` of the file ``path``; ValueError naming it when the
    record is not a JSON object."""
    try:
        meta = json.loads(_to_bytes(arrays['meta']))
    except ValueError as err:  # not JSON, or not text (UnicodeDecodeError)
        raise ValueError(f"{path}: its metadata is corrupt ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its metadata is corrupt (not a JSON object)")
    return meta


def _trainer_bytes(trainer):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'states')
        trainer.save_states(path)
        with open(path, 'rb') as f:
            return f.read()


def _save_arrays(tmp, arrays, path):
    """``mx.nd.save(tmp, arrays)``; a failure (a full disk) raised as an OSError naming
    ``path``."""
    with naming_failures(path, (mx.base.MXNetError,)):
        mx.nd.save(tmp, arrays)


def _write(stem, weights, state, meta):
    """Commit ``<stem>.params`` (``weights``: name -> array) and ``<stem>.state`` (``state``
    plus ``meta`` with the weights' SHA-256) as one unit.

    Both are written to temporary files. Then the state of the weights on disk is kept as
    ``<stem>.state.prev``, the new state and after it the new weights are renamed into place,
    and the kept state is removed: killed at any point, the weights file has its state, in
    ``<stem>.state`` or in the kept one (which :func:`load_checkpoint` then reads).
    """
    with atomic_path(stem + '.params') as weights_tmp, \
            atomic_path(stem + '.state') as state_tmp:  # renamed in this order: state, weights
        _save_arrays(weights_tmp, weights, stem + '.params')
        meta = {**meta, 'params_sha256': file_sha256(weights_tmp)}
        _save_arrays(state_tmp, {**state, 'meta': _to_array(json.dumps(meta).encode())},
                     stem + '.state')
        _keep_state_of_weights(stem)
    if os.path.lexists(stem + KEPT_STATE):
        os.remove(stem + KEPT_STATE)


def _keep_state_of_weights(stem):
    """Before a save is committed: make ``<stem>.state.prev`` the state of the weights on disk,
    ``<stem>.state`` (unless an interrupted save already kept the state of these weights)."""
    state, kept = stem + '.state', stem + KEPT_STATE
    if not os.path.lexists(state):
        return
    if os.path.lexists(kept):  # left by an interrupted save: keep whichever has these weights
        try:
            newer = (os.path.isfile(stem + '.params') and _read_state(state)[1].get(
                'params_sha256') == file_sha256(stem + '.params'))
        except ValueError:  # unreadable: not the state of any weights
            newer = False
        if not newer:
            return
    os.replace(state, kept)


def save_checkpoint(path, net, center_loss, meta, net_trainer=None, center_trainer=None):
    """Write a checkpoint: ``<stem>.params`` (the weights) and ``<stem>.state``, committed as
    one unit (an interrupted save leaves the previous checkpoint, or none, loadable).

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
    stem = checkpoint_stem(path)
    for key, trainer in (('net_trainer', net_trainer), ('center_trainer', center_trainer)):
        if trainer is not None:
            with naming_failures(stem + '.state', (mx.base.MXNetError,)):
                state[key] = _to_array(_trainer_bytes(trainer))
    _write(stem, weights, state, meta)


def _read(path, what):
    """The ``nd.save`` dictionary in ``path``; ValueError naming it when it is not one (and
    :func:`~gluon_ssdcl.utils.files.check_file`'s errors when it is no file)."""
    check_file(path, what)
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


def _read_state(path):
    """(arrays, meta) of the training state file ``path``."""
    state = _read(path, 'training state')
    if 'meta' not in state:
        raise ValueError(f"{path} is not a gluon_ssdcl training state (no metadata)")
    return state, _meta(state, path)


def _state_of(stem):
    """(path, arrays, meta) of the state of the weights ``<stem>.params``: ``<stem>.state``,
    or the one an interrupted save kept (:func:`save_checkpoint`)."""
    paths = [p for p in (stem + '.state', stem + KEPT_STATE) if os.path.lexists(p)]
    if not paths:
        raise FileNotFoundError(f"{stem}.state, the training state of {stem}.params, does not "
                                "exist (the weights alone load with net.load_parameters)")
    sha = file_sha256(stem + '.params')
    for path in paths:
        state, meta = _read_state(path)
        if meta.pop('params_sha256', None) == sha:
            return path, state, meta
    raise ValueError(f"{stem}.params and {stem}.state are from different saves: use another "
                     "checkpoint of the run")


def load_checkpoint(path, default='last'):
    """Read a checkpoint written by :func:`save_checkpoint`, named by either file or its run's
    prefix (then its ``default`` one, as :func:`checkpoint_stem`).

    Raises
    ------
    FileNotFoundError, IsADirectoryError, OSError, ValueError
        Naming the file: missing, a directory or a symlink loop, unreadable, not a gluon_ssdcl
        checkpoint, a one-file checkpoint of gluon_ssdcl 0.1 (with the command that converts
        it), weights that are not the state's, or NaN or infinite weights.
    """
    stem = checkpoint_stem(path, default)
    if not os.path.lexists(stem + '.params') and os.path.lexists(path):
        check_file(path, 'checkpoint')  # a directory, a symlink loop: say what it is
    weights = _read(stem + '.params', 'weights file')
    if 'meta' in weights:
        raise ValueError(f"{stem}.params is a one-file checkpoint of gluon_ssdcl 0.1: convert "
                         f"it with python -m gluon_ssdcl.checkpoint --convert {stem}.params")
    state_path, state, meta = _state_of(stem)
    trainers = [_to_bytes(state[k]) if k in state else None
                for k in ('net_trainer', 'center_trainer')]
    return Checkpoint(weights, state.get('centers'), *trainers, meta, stem + '.params',
                      state_path)


def _arrays(states):
    """The NDArrays in a trainer's pickled states (dicts, tuples and lists of them, or None)."""
    if isinstance(states, mx.nd.NDArray):
        yield states
    elif isinstance(states, dict):
        for value in states.values():
            yield from _arrays(value)
    elif isinstance(states, (list, tuple)):
        for value in states:
            yield from _arrays(value)


def _check_trainer_states(data, path, name):
    """ValueError naming ``path`` when the trainer states ``data`` (``Trainer.save_states``'
    bytes: the updater's states, with its optimizer) hold NaN or infinite values."""
    states = pickle.loads(data)  # as Trainer.load_states does
    if isinstance(states, tuple) and len(states) == 2:  # (states, optimizer)
        states = states[0]
    broken = sum(not np.isfinite(array.asnumpy()).all() for array in _arrays(states))
    if broken:
        raise ValueError(f"{path} holds NaN or infinite values in {broken} arrays of the "
                         f"{name} state: it comes from a diverged run or a damaged file; "
                         "resume from another checkpoint of the run")


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
        # cast_dtype: the weights of a slim checkpoint are stored in float16
        _load_from_file(lambda path: net.load_parameters(path, ctx=ctx, cast_dtype=True),
                        checkpoint.net_params)
        if center_loss is not None and checkpoint.centers is not None:
            _set_centers(center_loss, checkpoint.centers, old_classes, new_classes)
    except (AssertionError, mx.base.MXNetError) as err:  # load_parameters asserts on names
        # pylint: disable-next=import-outside-toplevel
        from ..model.zoo import checkpoint_network
        meta = checkpoint.meta
        network = checkpoint_network(meta) if 'network' in meta else None  # by its name now
        raise ValueError(f"{checkpoint.path} does not fit the network ({network}, "
                         f"{len(old_classes)} classes, embed_dim {meta.get('embed_dim')}, "
                         f"embed_hidden {meta.get('embed_hidden', 0)}): "
                         f"{str(err).strip().splitlines()[0]}") from err
    if other_classes:
        net.reset_class(new_classes, reuse_weights=[c for c in new_classes if c in old_classes])
    for trainer, data, name in ((net_trainer, checkpoint.net_trainer_states, 'network trainer'),
                                (center_trainer, checkpoint.center_trainer_states,
                                 'center trainer')):
        if trainer is not None and data is not None:
            _check_trainer_states(data, checkpoint.state_path, name)
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
    # pylint: disable-next=import-outside-toplevel
    from ..model.zoo import checkpoint_network, get_model
    ctx = ctx or [mx.cpu()]
    checkpoint = load_checkpoint(path, default='best')
    meta = checkpoint.meta
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"{checkpoint.path} lacks {', '.join(missing)} in its metadata")
    # checkpoints from before embed_hidden existed have none: their heads had no hidden layer
    net = get_model(checkpoint_network(meta), classes=meta['classes'],
                    embed_dim=meta['embed_dim'], embed_hidden=meta.get('embed_hidden', 0),
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
    _write(stem, weights, state, _meta(arrays, path))
    return stem


def slim_checkpoint(path, stem, dtype='float16', meta=None):
    """Write a checkpoint for inference only: its weights stored as ``dtype`` (loaded back as
    float32 by :func:`restore`), its centers and metadata, no trainer states; returns ``stem``.

    Parameters
    ----------
    path : str
        The checkpoint, as :func:`load_checkpoint` names it (a run's prefix: its best).
    stem : str
        The new checkpoint is ``<stem>.params`` and ``<stem>.state``.
    dtype : str
        Storage type of the weights, e.g. ``'float16'`` (half the size).
    meta : dict, optional
        Metadata entries to replace (e.g. the paths of the machine it was trained on).
    """
    checkpoint = load_checkpoint(path, default='best')
    weights = {name: array.astype(dtype) for name, array in checkpoint.net_params.items()}
    state = {} if checkpoint.centers is None else {'centers': checkpoint.centers}
    _write(stem, weights, state, {**checkpoint.meta, **(meta or {})})
    return stem
