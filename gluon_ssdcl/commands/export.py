"""Export a checkpoint for deployment: the network as an MXNet symbol graph, its centers and a
description, readable without gluon_ssdcl.

Usage::

    gluon-ssdcl export --params runs/<run>_best.params [-o DIR] [--embeddings]
        [--preprocess] [--onnx] [--open-set] [--overwrite]

``--params`` names a checkpoint by either of its files (``<stem>.params``, ``<stem>.state``) or
by its run's save prefix (then its best checkpoint, or its last). The command writes, in ``DIR``
(default: the checkpoint's folder), with ``<name>`` the checkpoint's model name (e.g.
``ssd_256_small_center_digits``):

- ``<name>-symbol.json`` and ``<name>-0000.params``: GluonCV's ``export_block`` layout, for
  ``mx.gluon.SymbolBlock.imports(symbol, ['data'], params)``, ``mx.mod.Module`` or the C++
  API. The graph is the inference net: ``ids (1,K,1), scores (1,K,1), bboxes (1,K,4)`` with
  ``--embeddings`` followed by ``embeddings (1,K,D)`` of the kept detections (-1 rows for
  padding). Its input is a ``(1, 3, S, S)`` normalised tensor, or with ``--preprocess``
  (as GluonCV's ``export_block(preprocess=True)``) a ``(1, S, S, 3)`` RGB image of floats in
  0..255, which the graph divides by 255, normalises with GluonCV's mean and std and
  transposes; ``S`` is the network's ``base_size``. ``gluon_ssdcl.deploy.preprocess(image,
  meta)`` makes either input from an image, and gives the scale of the boxes, which are in
  pixels of the ``S x S`` input.
- ``<name>-centers.npy``: the learned centers, float32 ``(C, D)``: a deployed model can label
  a detection by its nearest center.
- with a class bank beside the checkpoint (``<stem>.openset.npz``: ``register`` and
  ``evaluate --open-set`` write it; ``--open-set`` fits one when missing),
  ``<name>-openset-centers.npy``: float32 ``(K, D)`` centers of the bank's K classes (the
  trained ones, then registered ones; NaN rows for classes without a center), whose radii,
  class names and unknown rule are in the description's ``open_set`` record (a detection whose
  distance to its nearest center exceeds that center's radius is unknown, id -2); and
  ``<name>-openset-scores.npz``: the arrays of the energy, cosine, Mahalanobis and logit
  Gaussian scores, whose formulas and thresholds are in the record's ``scores``.
- ``<name>-meta.json``: the classes, embed_dim, training mode (``centers_trained`` is false for
  a softmax checkpoint, whose centers never moved), base_size, the input (name, shape, layout,
  normalisation, the helper that makes it), the outputs and the NMS settings.
- with ``--onnx``, ``<name>.onnx``: the same network for onnxruntime, stopping before NMS
  (``mxnet.onnx``'s NMS converter ignores classes), so it returns every (anchor, class)
  candidate; ``gluon_ssdcl.deploy.nms`` applies the MXNet graph's per-class NMS to them in
  NumPy.

The export is all or nothing: its files are written in a temporary folder in ``DIR``, then
moved into place together; a failure (a full disk) leaves ``DIR`` as it was. An earlier export
of the same model in ``DIR`` is refused unless ``--overwrite``, which replaces it as a whole
(its files this export does not write are removed). The written paths are printed, one a
line. Exit codes: 0; 1 when the checkpoint or its class bank cannot be read or used, a file
of an earlier export is in the way or a file cannot be written (one ``error:`` line naming
it); 2 for bad flags (``-o`` naming a file included).
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from ..deploy.export import export_model
from .common import (OneLineErrorParser, add_checkpoint_flag, checkpoint_path, output_folder,
                     program, run)

__all__ = ['build_parser', 'main']

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog='gluon-ssdcl export',
        description='Export a gluon_ssdcl checkpoint for deployment: <name>-symbol.json, '
                    '<name>-0000.params, <name>-centers.npy and <name>-meta.json.')
    add_checkpoint_flag(parser)
    parser.add_argument('-o', '--output-dir', type=output_folder, default=None,
                        help="folder of the exported files (default: the checkpoint's folder)")
    parser.add_argument('--embeddings', action='store_true',
                        help="add the kept detections' embeddings as a 4th output (default: "
                             "off)")
    parser.add_argument('--preprocess', action='store_true',
                        help='the graph takes (1, S, S, 3) RGB pixels in 0..255 and normalises '
                             'them (default: off, a (1, 3, S, S) normalised tensor)')
    parser.add_argument('--onnx', action='store_true',
                        help='also write <name>.onnx, the graph before NMS (run '
                             'gluon_ssdcl.deploy.nms on its outputs); needs the onnx extra '
                             '(default: off)')
    parser.add_argument('--open-set', action='store_true',
                        help="also export the class bank's centers and radii, fitted on the "
                             "training data when the checkpoint has no bank (default: off; a "
                             "bank beside the checkpoint is always exported)")
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an earlier export of the model in the folder, as a '
                             'whole (default: off, refused)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: export a checkpoint and print the written paths; see the module docstring.

    Returns 0, or 1 after one ``error: ...`` line on stderr. Bad flags exit with 2.
    """
    args = build_parser().parse_args(argv)

    def body() -> int:
        args.params = checkpoint_path(args)
        paths = export_model(args.params, args.output_dir, args.embeddings, args.preprocess,
                             args.onnx, open_set=args.open_set, overwrite=args.overwrite)
        for path in paths.values():
            print(path)
        return 0
    return run(body)


if __name__ == '__main__':
    program(main)
