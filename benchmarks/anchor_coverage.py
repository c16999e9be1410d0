"""The share of the digits' ground-truth boxes that a network's anchors fit (best-anchor
IoU ≥ 0.5, SSD's matching threshold), per class, on the validation (default) or training images.

    python benchmarks/anchor_coverage.py [--model ssd_256_small_center_digits] [--split val]
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)
import mxnet as mx

from common import get_model, initialize_params, model_name
from gluon_ssdcl.commands.common import OneLineErrorParser, positive_int, program, run
from gluon_ssdcl.data.datasets import get_dataset
from gluon_ssdcl.evaluation.coverage import dataset_coverage, format_coverage


def main(argv=None):
    p = OneLineErrorParser(prog='anchor_coverage.py', description=__doc__.splitlines()[0])
    p.add_argument('--model', default='ssd_256_small_center_digits', type=model_name,
                   help='a registered model (default: ssd_256_small_center_digits)')
    p.add_argument('--split', choices=('train', 'val'), default='val',
                   help='the digits split (default: val)')
    p.add_argument('--dataset-root', default=None, help='digits data set folder (default: the '
                                                        "default run's)")
    p.add_argument('--max-images', type=positive_int, default=None,
                   help='only the first images (default: all)')
    args = p.parse_args(argv)

    def body():
        net = get_model(args.model)
        initialize_params(net, [mx.cpu()])
        train, val = get_dataset('digits', args.dataset_root)
        result = dataset_coverage(net, val if args.split == 'val' else train,
                                  len(net.classes), args.max_images)
        print(format_coverage(result, net.classes))
        print(f"anchors of IoU >= 0.5 per box: {result['matched_per_box']:.2f}")
        return 0
    return run(body)


if __name__ == '__main__':
    program(main)
