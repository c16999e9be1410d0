"""The open-set scores' distributions: known true positives against held-out classes' objects,
one row per run (trained without those classes) and one column per score.

    python benchmarks/open_set_scores.py --runs softmax=runs/<run without 8, 9> \
        'softmax + center'=runs/<center-loss run without 8, 9> --scores cosine,energy \
        --unknown 8,9 --out docs/images/open_set_scores.png

Each panel shows both histograms, the threshold that keeps 95% of the known true positives
(dashed), the AUROC and the share of unknowns that threshold rejects.
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)

import mxnet as mx
import numpy as np

from gluon_ssdcl.commands.common import OneLineErrorParser, classes_flag, program, run
from gluon_ssdcl.data.datasets import get_dataset
from gluon_ssdcl.embeddings.metrics import auroc, rejected_at_recall
from gluon_ssdcl.engine.checkpoint import load_model
from gluon_ssdcl.evaluation.class_banks import bank_scores, checkpoint_bank
from gluon_ssdcl.evaluation.inference import validation_detections
from gluon_ssdcl.evaluation.open_set import OPEN_SET_SCORES, score_sets
from gluon_ssdcl.utils.files import atomic_path

RECALL = 0.95


def run_scores(path, unknown, names, ctx):
    """``{score name: (known TPs' scores, unknowns' scores)}`` of one checkpoint."""
    model = load_model(path, ctx)
    model.net.hybridize()
    meta = model.checkpoint.meta
    bank = checkpoint_bank(model, ctx, registered=False)
    _, val = get_dataset(meta['dataset'], meta.get('dataset_root'))
    images = validation_detections(model.net, val, ctx, 16)
    scores, embeddings, _ = score_sets(images, bank, bank_scores(model.net, bank), unknown)
    if not len(embeddings['known']) or not len(embeddings['unknown']):
        raise ValueError(f"{model.checkpoint.path}: {len(embeddings['known'])} known true "
                         f"positives and {len(embeddings['unknown'])} unknown objects boxed: "
                         "nothing to draw (an untrained model?)")
    return {name: scores[name] for name in names}


def plot(rows, names):
    """The figure: ``rows`` is ``{title: {score name: (known, unknown)}}``."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    fig = Figure(figsize=(4 * len(names), 2.6 * len(rows)))
    axes = fig.subplots(len(rows), len(names), squeeze=False)
    for r, (title, scores) in enumerate(rows.items()):
        for c, name in enumerate(names):
            known, unknown = scores[name]
            ax = axes[r][c]
            bins = np.linspace(min(known.min(), unknown.min()), max(known.max(), unknown.max()),
                               40)
            ax.hist(known, bins, density=True, alpha=0.6, label='known true positives')
            ax.hist(unknown, bins, density=True, alpha=0.6, label='unknown (held out)')
            threshold, rejected = rejected_at_recall(known, unknown, RECALL)
            ax.axvline(threshold, color='k', linestyle='--', linewidth=1)
            ax.set_title(f"{title}: {name}\nAUROC {auroc(known, unknown):.3f}, "
                         f"{rejected:.0%} rejected at 95% known", fontsize=9)
            ax.set_yticks([])
            ax.tick_params(labelsize=8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None):
    p = OneLineErrorParser(prog='open_set_scores.py', description=__doc__.splitlines()[0])
    p.add_argument('--runs', nargs='+', required=True, metavar='TITLE=CHECKPOINT',
                   help='the runs, one row each')
    p.add_argument('--scores', default='cosine,energy',
                   help=f"comma-separated scores, of {', '.join(OPEN_SET_SCORES)} "
                        "(default: cosine,energy)")
    p.add_argument('--unknown', type=classes_flag, default=[8, 9],
                   help='the classes the runs were trained without (default: 8,9)')
    p.add_argument('--out', required=True, help='the PNG to write')
    args = p.parse_args(argv)
    runs = [text.partition('=') for text in args.runs]
    if any(not sep for _, sep, _ in runs):
        p.error('--runs: give TITLE=CHECKPOINT')
    names = [name.strip() for name in args.scores.split(',') if name.strip()]
    bad = sorted(set(names) - set(OPEN_SET_SCORES))
    if bad or not names:
        p.error(f"--scores: unknown {', '.join(bad) if bad else repr(args.scores)} (choose "
                f"from {', '.join(OPEN_SET_SCORES)})")

    def body():
        rows = {title: run_scores(path, args.unknown, names, [mx.cpu()])
                for title, _, path in runs}
        with atomic_path(args.out) as tmp:
            plot(rows, names).savefig(tmp, format='png', dpi=70)
        print(args.out)
        return 0
    return run(body)


if __name__ == '__main__':
    program(main)
