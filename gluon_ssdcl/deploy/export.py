"""Export a checkpoint for deployment: the network as an MXNet symbol graph, its centers and a
description, readable without gluon_ssdcl (``gluon-ssdcl export``: :func:`export_model`).

The export of a checkpoint whose model name is ``<name>`` (e.g. ``ssd_256_small_center_digits``)
is, in its folder:

- ``<name>-symbol.json`` and ``<name>-0000.params``: GluonCV's ``export_block`` layout, for
  ``mx.gluon.SymbolBlock.imports(symbol, ['data'], params)``, ``mx.mod.Module`` or the C++
  API. The graph is the inference net: ``ids (1,K,1), scores (1,K,1), bboxes (1,K,4)``, with
  ``embeddings`` followed by ``embeddings (1,K,D)`` of the kept detections (-1 rows for
  padding). Its input is a ``(1, 3, S, S)`` normalised tensor, or with ``preprocess``
  (as GluonCV's ``export_block(preprocess=True)``) a ``(1, S, S, 3)`` RGB image of floats in
  0..255, which the graph divides by 255, normalises with GluonCV's mean and std and
  transposes; ``S`` is the network's ``base_size``. :func:`~.inputs.preprocess` makes either
  input from an image; boxes are in the pixels of the ``S x S`` input.
- ``<name>-centers.npy``: the learned centers, float32 ``(C, D)``: a deployed model can label
  a detection by its nearest center.
- with a class bank (``<stem>.openset.npz`` beside the checkpoint, or fitted with
  ``open_set``), ``<name>-openset-centers.npy``: float32 ``(K, D)`` centers of the bank's K
  classes (the trained ones, then registered ones; NaN rows for classes without a center),
  whose radii, class names and unknown rule are in the description's ``open_set`` record (a
  detection whose distance to its nearest center exceeds that center's radius is unknown,
  id -2); and ``<name>-openset-scores.npz``: the arrays of the post-hoc open-set scores
  (:mod:`gluon_ssdcl.embeddings.scores`: energy, cosine, Mahalanobis, logit Gaussians), whose
  formulas and thresholds are in the ``open_set`` record's ``scores``.
- ``<name>-meta.json``: the classes, embed_dim, training mode (``centers_trained`` is false for
  a softmax checkpoint, whose centers never moved), base_size, the input (name, shape, layout,
  normalisation, the helper that makes it), the outputs and the NMS settings.
- with ``onnx``, ``<name>.onnx``: the same network for onnxruntime, stopping before NMS
  (``mxnet.onnx``'s NMS converter ignores classes), so it returns every (anchor, class)
  candidate; :func:`nms` applies the MXNet graph's per-class NMS to them in NumPy.

An export is all or nothing: its files are written in a temporary folder beside them, then
moved into place together; a failure leaves the folder as it was. An earlier export of the
same model in the folder is replaced only when asked (``overwrite``), and then as a whole: its
files the new export does not write are removed.
"""
import contextlib
import importlib.util
import json
import logging
import os
import tempfile
from typing import Dict, Iterator, Optional, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from ..embeddings.class_bank import UNKNOWN_ID, UNKNOWN_NAME, bank_path
from ..engine.checkpoint import load_model
from ..evaluation.class_banks import bank_scores, checkpoint_bank
from ..evaluation.inference import NMS_THRESH, NMS_TOPK, POST_NMS
from ..losses.multibox import Mode
from ..model.ssd import SSDCenter
from ..utils.files import TMP_SUFFIX, naming_failures
from .inputs import IMAGE_MEAN, IMAGE_STD

__all__ = ['Preprocess', 'deployable_block', 'input_shape', 'describe_bank', 'describe_scores',
           'write_graph', 'write_onnx', 'nms', 'describe', 'check_exportable', 'export_paths',
           'export_model']

logger = logging.getLogger(__name__)

EPOCH = 0  # the number in <name>-0000.params
# the files of an export by key, in the order they are moved into place (the description last)
EXPORT_FILES = {'symbol': '-symbol.json', 'params': f'-{EPOCH:04d}.params', 'onnx': '.onnx',
                'centers': '-centers.npy', 'openset_centers': '-openset-centers.npy',
                'openset_scores': '-openset-scores.npz', 'meta': '-meta.json'}


class Preprocess(nn.HybridBlock):
    """RGB images ``(B, H, W, 3)`` of floats in 0..255 to the network's input ``(B, 3, H, W)``:
    ``(x / 255 - mean) / std``, then the transpose (GluonCV's ``export_block`` preprocessing,
    which folds the 255 into its constants).

    Parameters
    ----------
    mean, std : tuple of 3 floats
        Per-channel mean and standard deviation of pixels in [0, 1].
    """

    def __init__(self, mean=IMAGE_MEAN, std=IMAGE_STD, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.mean = self.params.get_constant(
                'mean', mx.nd.array(mean).reshape((1, 1, 1, 3)))
            self.std = self.params.get_constant('std', mx.nd.array(std).reshape((1, 1, 1, 3)))

    # pylint: disable=arguments-differ
    def hybrid_forward(self, F, x, mean, std):
        x = F.broadcast_div(F.broadcast_minus(x / 255, mean), std)
        return F.transpose(x, axes=(0, 3, 1, 2))


def deployable_block(net: SSDCenter, embeddings: bool = False, preprocess: bool = False,
                     ctx: Optional[mx.Context] = None) -> nn.HybridBlock:
    """``net`` ready for :meth:`~mxnet.gluon.HybridBlock.export`: hybridized, one inference pass
    done on zeros of its input shape.

    Parameters
    ----------
    net : SSDCenter
        Initialised on ``ctx``; switched to ``set_embeddings(infer=embeddings)`` in place.
    embeddings : bool
        Whether the graph also returns the kept detections' embeddings ``(B, K, D)``.
    preprocess : bool
        Whether the graph starts with :class:`Preprocess`: input ``(B, S, S, 3)`` in 0..255
        instead of ``(B, 3, S, S)`` normalised, with ``S = net.base_size``.
    ctx : mx.Context, optional
        Where the pass runs (default: the CPU).

    Returns
    -------
    HybridBlock
        ``net`` itself, or a ``HybridSequential`` of :class:`Preprocess` and ``net``.
    """
    ctx = ctx or mx.cpu()
    net.set_embeddings(infer=embeddings)
    block = net
    if preprocess:
        block = nn.HybridSequential()
        first = Preprocess()
        first.initialize(ctx=ctx)
        block.add(first, net)
    block.hybridize()
    with mx.autograd.predict_mode():
        block(mx.nd.zeros(input_shape(net.base_size, preprocess), ctx=ctx))
    return block


def input_shape(base_size: int, preprocess: bool) -> Tuple[int, int, int, int]:
    """The exported graph's input shape: ``(1, S, S, 3)`` with preprocessing, else
    ``(1, 3, S, S)``."""
    return (1, base_size, base_size, 3) if preprocess else (1, 3, base_size, base_size)


def write_graph(block: nn.HybridBlock, prefix: str) -> Tuple[str, str]:
    """Export a hybridized block that has run once to ``<prefix>-symbol.json`` and
    ``<prefix>-0000.params`` (``HybridBlock.export``; in place: :func:`export_model` writes
    in a temporary folder).

    Returns
    -------
    (symbol path, params path)
    """
    block.export(prefix, EPOCH)
    return f'{prefix}{EXPORT_FILES["symbol"]}', f'{prefix}{EXPORT_FILES["params"]}'


@contextlib.contextmanager
def _without_onnx_file_log() -> Iterator[None]:
    """Leave out ``mxnet.onnx``'s log line naming the file it saved (a temporary one here): a
    filter on the root logger, which that line is logged on, while the block runs."""
    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith('Exported ONNX file')
    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _weights_as_constants(source: str, path: str) -> None:
    """Save the ONNX model at ``source`` to ``path`` with its weights initializers only:
    ``mxnet.onnx`` also lists them as graph inputs, and keeps unused ones, which onnxruntime
    warns about, one line per weight."""
    import onnx  # pylint: disable=import-outside-toplevel
    model = onnx.load(source)
    graph = model.graph
    weights = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    used = {name for node in graph.node for name in node.input}
    used.update(value.name for value in graph.output)
    initializers = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.save(model, path)


def write_onnx(net: SSDCenter, embeddings: bool, preprocess: bool, path: str,
               ctx: Optional[mx.Context] = None) -> str:
    """Write the ONNX model of ``net`` before NMS to ``path`` (in place: :func:`export_model`
    writes in a temporary folder): onnxruntime runs it, and :func:`nms` on its outputs gives
    the detections of the MXNet graph. Its only graph input is ``data``; the weights are
    initializers.

    ``mxnet.onnx``'s ``box_nms`` converter suppresses boxes across classes, unlike the MXNet
    graph, so the ONNX graph stops before NMS: its outputs are every (anchor, class) candidate,
    ``ids (1, N*C, 1)`` (-1 below the score threshold 0.01), ``scores (1, N*C, 1)``,
    ``bboxes (1, N*C, 4)`` and with ``embeddings`` the anchors' ``embeddings (1, N*C, D)``.

    Raises
    ------
    ImportError
        When the ``onnx`` extra (onnx, onnxruntime) is not installed.
    """
    if importlib.util.find_spec('onnx') is None:
        raise ImportError("ONNX export needs the onnx extra: pip install 'gluon_ssdcl[onnx]'")
    from mxnet import onnx as mx_onnx  # pylint: disable=import-outside-toplevel
    nms_settings = (net.nms_thresh, net.nms_topk, net.post_nms)
    net.set_nms(nms_thresh=0)  # no NMS in the graph
    try:
        block = deployable_block(net, embeddings, preprocess, ctx)
        with tempfile.TemporaryDirectory() as scratch:
            symbol, params = write_graph(block, os.path.join(scratch, 'graph'))
            converted = os.path.join(scratch, 'graph.onnx')
            with _without_onnx_file_log():
                mx_onnx.export_model(symbol, params, [input_shape(net.base_size, preprocess)],
                                     [np.float32], converted)
            _weights_as_constants(converted, path)
    finally:
        net.set_nms(*nms_settings)
    return path


def nms(ids, scores, bboxes, embeddings=None, nms_thresh: float = NMS_THRESH,
        nms_topk: int = NMS_TOPK, post_nms: int = POST_NMS, valid_thresh: float = 0.01):
    """The per-class NMS of the MXNet graph (``box_nms``, ``force_suppress=False``), in NumPy,
    for the outputs of the ONNX graph of one image (see :func:`write_onnx`).

    Parameters
    ----------
    ids, scores : numpy.ndarray, (M,) or (1, M, 1)
        Candidates' class ids (-1: none) and scores.
    bboxes : numpy.ndarray, (M, 4) or (1, M, 4)
        ``[xmin, ymin, xmax, ymax]``.
    embeddings : numpy.ndarray, (M, D) or (1, M, D), optional
    nms_thresh, nms_topk, post_nms, valid_thresh
        As the exported network's (GluonCV's validation values by default).

    Returns
    -------
    (ids (K,), scores (K,), bboxes (K, 4)[, embeddings (K, D)])
        The kept detections by decreasing score: among the ``nms_topk`` best candidates of
        score above ``valid_thresh``, a box overlapping a better one of its class with IoU
        above ``nms_thresh`` is suppressed; at most ``post_nms``.
    """
    ids, scores = np.reshape(ids, -1), np.reshape(scores, -1)
    bboxes = np.reshape(bboxes, (-1, 4))
    order = np.flatnonzero((ids >= 0) & (scores > valid_thresh))
    order = order[np.argsort(-scores[order], kind='stable')][:nms_topk]
    area = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
    kept = []
    for i in order:
        same = [k for k in kept if ids[k] == ids[i]]
        lower = np.maximum(bboxes[same, :2], bboxes[i, :2])
        upper = np.minimum(bboxes[same, 2:], bboxes[i, 2:])
        inter = np.prod(np.clip(upper - lower, 0, None), axis=1)
        if not np.any(inter / (area[same] + area[i] - inter) > nms_thresh):
            kept.append(i)
    kept = kept[:post_nms]
    found = (ids[kept], scores[kept], bboxes[kept])
    if embeddings is None:
        return found
    return found + (np.reshape(embeddings, (len(ids), -1))[kept],)


def describe_bank(bank) -> dict:
    """The ``open_set`` record of ``<name>-meta.json``: a
    :class:`~gluon_ssdcl.embeddings.class_bank.ClassBank`'s classes, radii (None for classes
    without a center) and unknown rule."""
    return {'classes': list(bank.classes),
            'radii': [None if np.isnan(r) else float(r) for r in bank.radii],
            'registered': dict(bank.registered), 'quantile': bank.quantile,
            'center_source': bank.center_source, 'centers': 'openset-centers.npy',
            'unknown_id': UNKNOWN_ID, 'unknown_name': UNKNOWN_NAME,
            'rule': "nearest center (Euclidean, among classes with a radius); unknown when the "
                    "distance exceeds that center's radius"}


SCORE_ARRAYS = ('weight', 'bias', 'known', 'means', 'precision', 'logit_means',
                'logit_precisions', 'logit_logdets')


def describe_scores(scorer) -> dict:
    """The ``open_set.scores`` record of ``<name>-meta.json``: the thresholds of a
    :class:`~gluon_ssdcl.embeddings.scores.ScoreModel` and how a deployment computes each score
    from a detection's embedding ``e`` with the arrays of ``<name>-openset-scores.npz``."""
    logits = 'z = weight @ e + bias (the class head; index 0 is the background)'
    return {'thresholds': dict(scorer.thresholds), 'arrays': list(SCORE_ARRAYS),
            'rule': 'unknown when the score exceeds its threshold (the score of the bank\'s '
                    'quantile of the training positives)',
            'formulas': {
                'energy': f'-logsumexp(z[1 + known]), {logits}',
                'cosine': '1 - max over the classes k whose means[k] is finite of '
                          '(e @ means[k]) / (|e| |means[k]|)',
                'mahalanobis': 'min over the classes k whose means[k] is finite of '
                               '(e - means[k]) @ precision @ (e - means[k])',
                'gaussian': 'min over the classes k whose logit_means[k] is finite of '
                            '((z - logit_means[k]) @ logit_precisions[k] @ (z - logit_means[k])'
                            f' + logit_logdets[k]) / 2, {logits}'}}


def describe(meta: dict, base_size: int, embeddings: bool, preprocess: bool) -> dict:
    """The ``<name>-meta.json`` record of an export (see the module docstring).

    Parameters
    ----------
    meta : dict
        The checkpoint's metadata (network, classes, embed_dim, mode; epoch if recorded).
    base_size : int
    embeddings, preprocess : bool
        What the exported graph includes.
    """
    return {
        'network': meta['network'], 'classes': list(meta['classes']),
        'embed_dim': meta['embed_dim'], 'mode': meta['mode'],
        'centers_trained': Mode(meta['mode']).uses_center, 'epoch': meta.get('epoch'),
        'base_size': base_size, 'embeddings': embeddings, 'preprocess': preprocess,
        'input': {'name': 'data', 'shape': list(input_shape(base_size, preprocess)),
                  'layout': 'NHWC' if preprocess else 'NCHW',
                  'values': ('RGB pixels in 0..255' if preprocess else
                             'RGB pixels in [0, 1] minus mean, divided by std'),
                  'mean': list(IMAGE_MEAN), 'std': list(IMAGE_STD),
                  'resize': "to S x S as GluonCV's SSDDefaultValTransform (imresize, interp=9)",
                  'helper': 'gluon_ssdcl.deploy.preprocess',
                  'boxes': 'bboxes are [xmin, ymin, xmax, ymax] in pixels of the S x S input: '
                           'times the scale gluon_ssdcl.deploy.preprocess returns, (W/S, H/S, '
                           "W/S, H/S), they are in the W x H image's"},
        'outputs': ['ids', 'scores', 'bboxes'] + (['embeddings'] if embeddings else []),
        'nms': {'nms_thresh': NMS_THRESH, 'nms_topk': NMS_TOPK, 'post_nms': POST_NMS,
                'valid_thresh': 0.01,
                'onnx': 'the .onnx graph stops before NMS: run gluon_ssdcl.deploy.nms (per '
                        'class) on its outputs'},
    }


def check_exportable(net, meta: dict, params: str) -> None:
    """Refuse, naming the checkpoint file ``params``, a network that is not an
    :class:`SSDCenter` or metadata with an unknown training mode.

    Raises
    ------
    ValueError
    """
    if not isinstance(net, SSDCenter):
        raise ValueError(f"{params}: {meta['network']} is not a gluon_ssdcl SSDCenter network")
    if meta['mode'] not in {mode.value for mode in Mode}:
        raise ValueError(f"{params}: unknown training mode {meta['mode']!r} in its metadata")


def export_paths(out_dir: str, name: str) -> Dict[str, str]:
    """Every file an export of the model ``name`` may have in ``out_dir``, by key (those of
    :func:`export_model`'s result)."""
    return {key: os.path.join(out_dir, name + suffix) for key, suffix in EXPORT_FILES.items()}


def _move_into_place(moves: Dict[str, Optional[str]], scratch: str) -> None:
    """``{path: new file or None}``: each path gets its new file, or is removed; all or
    nothing.

    The files at the paths are first moved aside into ``scratch`` (a folder on the same file
    system, removed by the caller), then the new ones in; on a failure the new ones are taken
    out and the earlier ones put back.
    """
    aside, placed = [], []
    try:
        for index, path in enumerate(moves):
            if os.path.lexists(path):
                earlier = os.path.join(scratch, f'earlier-{index}')
                os.replace(path, earlier)
                aside.append((path, earlier))
        for path, source in moves.items():
            if source is not None:
                os.replace(source, path)
                placed.append(path)
    except BaseException:
        for path in placed:
            os.remove(path)
        for path, earlier in aside:
            os.replace(earlier, path)
        raise


def _write_files(model, bank, out_dir: str, staging: str, embeddings: bool, preprocess: bool,
                 onnx: bool, ctx: mx.Context) -> Dict[str, str]:
    """Write the files of an export to ``out_dir`` in the folder ``staging`` (see
    :func:`export_model`); returns them by key. A failure that names no file (a full disk) is
    raised naming the file's path in ``out_dir``."""
    net, center_loss, checkpoint = model
    name = checkpoint.meta['network']
    final, paths = export_paths(out_dir, name), export_paths(staging, name)
    keys = (['symbol', 'params'] + (['onnx'] if onnx else []) + ['centers']
            + (['openset_centers', 'openset_scores'] if bank is not None else []) + ['meta'])

    def writing(key: str):
        return naming_failures(final[key], (mx.base.MXNetError,))
    net.set_nms(nms_thresh=NMS_THRESH, nms_topk=NMS_TOPK, post_nms=POST_NMS)
    block = deployable_block(net, embeddings, preprocess, ctx)
    with writing('params'):
        write_graph(block, os.path.join(staging, name))
    if onnx:
        with writing('onnx'):
            write_onnx(net, embeddings, preprocess, paths['onnx'], ctx)
    with writing('centers'):
        np.save(paths['centers'],
                center_loss.centers.weight.data(ctx).asnumpy().astype(np.float32))
    description = describe(checkpoint.meta, net.base_size, embeddings, preprocess)
    if bank is not None:
        with writing('openset_centers'):
            np.save(paths['openset_centers'], bank.centers.astype(np.float32))
        scorer = bank_scores(net, bank)
        with writing('openset_scores'), open(paths['openset_scores'], 'wb') as f:
            np.savez(f, **{key: getattr(scorer, key) for key in SCORE_ARRAYS})
        description['open_set'] = describe_bank(bank)
        description['open_set']['centers'] = os.path.basename(paths['openset_centers'])
        description['open_set']['scores'] = describe_scores(scorer)
        description['open_set']['scores']['file'] = os.path.basename(paths['openset_scores'])
    with writing('meta'), open(paths['meta'], 'w') as f:
        json.dump(description, f, indent=1, allow_nan=False)
    return {key: paths[key] for key in keys}


def export_model(params: str, out_dir: Optional[str] = None, embeddings: bool = False,
                 preprocess: bool = False, onnx: bool = False,
                 ctx: Optional[mx.Context] = None, open_set: bool = False,
                 overwrite: bool = False) -> Dict[str, str]:
    """Export a checkpoint's network, centers and description, all or nothing (see the module
    docstring).

    Parameters
    ----------
    params : str
        Either file of a checkpoint, or its run's save prefix (see
        :func:`~gluon_ssdcl.engine.checkpoint.load_model`).
    out_dir : str, optional
        Folder of the exported files, created if needed (default: the checkpoint's folder).
    embeddings : bool
        Whether the graph's outputs end with the kept detections' embeddings ``(1, K, D)``.
    preprocess : bool
        Whether the graph takes ``(1, S, S, 3)`` pixels in 0..255 (else ``(1, 3, S, S)``
        normalised).
    onnx : bool
        Also write ``<name>.onnx``, the graph before NMS (:func:`write_onnx`).
    ctx : mx.Context, optional
        Where the network is built (default: the CPU).
    open_set : bool
        Fit and save the checkpoint's class bank when it has none (a bank beside the
        checkpoint is always exported).
    overwrite : bool
        Replace an earlier export of the same model in ``out_dir`` (as a whole: its files this
        export does not write are removed).

    Returns
    -------
    dict
        ``symbol``, ``params``, ``centers``, ``meta`` (and ``onnx``, ``openset_centers``): the
        paths written.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming ``params``: a missing, unreadable or mismatched checkpoint; naming the class
        bank: a damaged one.
    FileExistsError
        Naming a file of an earlier export, without ``overwrite``.
    NotADirectoryError
        When ``out_dir`` is a file.
    OSError
        When a file cannot be written (the folder is left as it was).
    """
    ctx = ctx or mx.cpu()
    if out_dir and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"{out_dir} is a file, not a folder")
    model = load_model(params, [ctx])
    checkpoint = model.checkpoint
    check_exportable(model.net, checkpoint.meta, checkpoint.path)
    out_dir = out_dir or os.path.dirname(os.path.abspath(checkpoint.path))
    name = checkpoint.meta['network']
    final = export_paths(out_dir, name)
    earlier = [path for path in final.values() if os.path.lexists(path)]
    if earlier and not overwrite:
        raise FileExistsError(f"{earlier[0]} exists, from an earlier export: replace that "
                              "export with --overwrite, or export to another folder")
    bank = (checkpoint_bank(model, [ctx]) if open_set or os.path.isfile(bank_path(
        checkpoint.path)) else None)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f'{name}-export-', suffix=TMP_SUFFIX,
                                     dir=out_dir) as staging:
        written = _write_files(model, bank, out_dir, staging, embeddings, preprocess, onnx,
                               ctx)
        _move_into_place({path: written.get(key) for key, path in final.items()}, staging)
    paths = {key: final[key] for key in written}
    logger.info("exported %s: %s", checkpoint.path, ', '.join(paths.values()))
    return paths
