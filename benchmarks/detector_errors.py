"""Where a trained detector loses AP: mAP at IoU 0.3, 0.5 and 0.7, and for every ground-truth box
whether a detection finds it and whether the best-scoring one has the right class, per class and
per box height, on the validation (default) or training images of the checkpoint's data set.

    python benchmarks/detector_errors.py --params runs/<run>_best.params [--split val]
"""
import common  # noqa: F401  isort: skip  (first: it sets the threads before MXNet loads)

from gluon_ssdcl.commands.common import (OneLineErrorParser, add_gpus_flag, contexts,
                                         positive_int, program, run)
from gluon_ssdcl.data.datasets import get_dataset
from gluon_ssdcl.engine.checkpoint import load_model
from gluon_ssdcl.evaluation.errors import box_outcomes, format_label_errors, label_errors
from gluon_ssdcl.evaluation.inference import detections_map, validation_detections

IOU_THRESHOLDS = (0.3, 0.5, 0.7)


def main(argv=None):
    p = OneLineErrorParser(prog='detector_errors.py', description=__doc__.splitlines()[0])
    p.add_argument('--params', required=True, help='a checkpoint (its _best or _last file)')
    p.add_argument('--split', choices=('train', 'val'), default='val',
                   help='the images to run on (default: val)')
    p.add_argument('--dataset-root', default=None,
                   help="data set folder (default: the checkpoint's)")
    p.add_argument('--max-images', type=positive_int, default=500,
                   help='the first images of the split (default: 500)')
    p.add_argument('--batch-size', type=positive_int, default=16)
    add_gpus_flag(p)
    args = p.parse_args(argv)

    def body():
        ctx = contexts(args.gpus)
        model = load_model(args.params, ctx)
        meta = model.checkpoint.meta
        model.net.hybridize()
        train, val = get_dataset(meta['dataset'], args.dataset_root or meta.get('dataset_root'),
                                 classes=model.classes if meta['dataset'] == 'custom' else None)
        images = validation_detections(model.net, val if args.split == 'val' else train, ctx,
                                       args.batch_size, max_images=args.max_images)
        print('| IoU | mAP | ' + ' | '.join(model.classes) + ' |')
        print('| --- | --- |' + ' --- |' * len(model.classes))
        for thresh in IOU_THRESHOLDS:
            mean_ap, per_class = detections_map(images, model.classes, iou_thresh=thresh)
            print(f'| {thresh} | {mean_ap:.3f} | '
                  + ' | '.join(f'{per_class[c]:.3f}' for c in model.classes) + ' |')
        print()
        result = label_errors(*box_outcomes(images), num_classes=len(model.classes))
        print(format_label_errors(result, model.classes))
        return 0
    return run(body)


if __name__ == '__main__':
    program(main)
