"""How the shipped weights are made: a trained run's best checkpoint, slim (float16 weights, no
trainer states), with its class bank, in ``gluon_ssdcl/model/weights/``.

    python benchmarks/ship_pretrained.py --params runs/ssd_256_small_center_digits_softmax-center

writes ``<name>.params``, ``<name>.state`` and ``<name>.openset.npz`` (the bank, fitted on the
run's training images), measures the validation mAP of the run's float32 weights and of the
float16 ones side by side, and prints the ``SHIPPED`` entry of
:mod:`gluon_ssdcl.model.pretrained` (each file's SHA-256) with the sizes and the two mAPs.
The data paths of the machine it ran on are replaced by the defaults (the digits set is
generated the same on every machine), so the shipped model finds the user's own copy.
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)

import json
import os
import subprocess

import mxnet as mx

from gluon_ssdcl.commands.common import OneLineErrorParser, program, run
from gluon_ssdcl.data.datasets import get_dataset, get_val_loader
from gluon_ssdcl.engine.checkpoint import load_model, slim_checkpoint
from gluon_ssdcl.evaluation.class_banks import checkpoint_bank
from gluon_ssdcl.evaluation.inference import detection_map
from gluon_ssdcl.model.pretrained import WEIGHTS_DIR
from gluon_ssdcl.utils.files import file_sha256

SUFFIXES = ('.params', '.state', '.openset.npz')


def validation_map(path, ctx):
    """VOC07 mAP of the checkpoint ``path`` on its validation set, and the loaded model."""
    model = load_model(path, ctx)
    meta = model.checkpoint.meta
    _, val = get_dataset(meta['dataset'], meta.get('dataset_root'))
    loader = get_val_loader(val, model.net.base_size, model.net.base_size, 16)
    model.net.hybridize()
    return detection_map(model.net, loader, ctx, meta['classes'])[0], model


def main(argv=None):
    p = OneLineErrorParser(prog='ship_pretrained.py', description=__doc__.splitlines()[0])
    p.add_argument('--params', required=True, help="the run (its prefix: its best checkpoint)")
    p.add_argument('--name', default='ssd_256_small_center_digits',
                   help='the model name it ships as (default: %(default)s)')
    p.add_argument('--out', default=WEIGHTS_DIR, help="folder (default: the package's)")
    args = p.parse_args(argv)

    def body():
        ctx = [mx.cpu()]
        stem = os.path.join(args.out, args.name)
        source_map, source = validation_map(args.params, ctx)
        flags = dict(source.checkpoint.meta['flags'], save_prefix='', dataset_root=None)
        slim_checkpoint(args.params, stem, meta={'dataset_root': None, 'flags': flags})
        slim_map, slim = validation_map(stem + '.params', ctx)
        checkpoint_bank(slim, ctx)  # fitted on the training images, saved beside the weights
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        sha = {suffix: file_sha256(stem + suffix) for suffix in SUFFIXES}
        print(json.dumps({'name': args.name, 'sha256': sha, 'commit': commit,
                          'bytes': {s: os.path.getsize(stem + s) for s in SUFFIXES},
                          'map_float32': source_map, 'map_float16': slim_map}, indent=1))
        return 0
    return run(body)


if __name__ == '__main__':
    program(main)
