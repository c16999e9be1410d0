"""Feature maps of the real embeddings: the validation positives' embeddings of trained runs in
2-D, t-SNE and PCA, side by side, with the centers (of center-loss runs) and the class means.

    python benchmarks/feature_maps.py --runs softmax=runs/<softmax run> \
        'softmax + center'=runs/<center-loss run> --out docs/images/feature_maps.png
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)

import mxnet as mx

from gluon_ssdcl.commands.common import OneLineErrorParser, positive_int, program, run
from gluon_ssdcl.data.datasets import get_dataset
from gluon_ssdcl.engine.checkpoint import load_model
from gluon_ssdcl.evaluation.inference import collect_positives, positive_loader
from gluon_ssdcl.utils.files import atomic_path
from gluon_ssdcl.viz import plot_embedding_grid


def run_embeddings(path, max_images, ctx):
    """(embeddings (M, D), labels (M,), centers (C, D) or None) of a checkpoint's validation
    positives; the centers of a softmax run are not trained, so not drawn."""
    model = load_model(path, ctx)
    meta = model.checkpoint.meta
    _, val = get_dataset(meta['dataset'], meta.get('dataset_root'))
    loader = positive_loader(val, model.net, 16, order=range(min(max_images, len(val))))
    embeddings, labels, _ = collect_positives(model.net, loader, ctx)
    centers = None if meta['mode'] == 'softmax' else model.centers.asnumpy()
    return embeddings, labels, centers, model.classes


def main(argv=None):
    p = OneLineErrorParser(prog='feature_maps.py', description=__doc__.splitlines()[0])
    p.add_argument('--runs', nargs='+', required=True, metavar='TITLE=CHECKPOINT',
                   help='the runs, one column each')
    p.add_argument('--out', required=True, help='the PNG to write')
    p.add_argument('--max-images', type=positive_int, default=200,
                   help='the first validation images (default: %(default)s)')
    p.add_argument('--max-points', type=positive_int, default=2000,
                   help='embeddings drawn per run (default: %(default)s)')
    args = p.parse_args(argv)
    runs = [text.partition('=') for text in args.runs]
    if any(not sep for _, sep, _ in runs):
        p.error('--runs: give TITLE=CHECKPOINT')

    def body():
        columns, classes = {}, None
        for title, _, path in runs:
            embeddings, labels, centers, classes = run_embeddings(path, args.max_images,
                                                                  [mx.cpu()])
            columns[title] = (embeddings, labels, centers)
        fig = plot_embedding_grid(columns, classes, max_points=args.max_points)
        with atomic_path(args.out) as tmp:
            fig.savefig(tmp, format='png', dpi=60)
        print(args.out)
        return 0
    return run(body)


if __name__ == '__main__':
    program(main)
