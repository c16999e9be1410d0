"""Tests of gluon_ssdcl.detect: the detection command line and its helpers."""
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
from gluoncv.data.transforms import bbox as tbbox
from gluoncv.data.transforms import image as timage
from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform
from PIL import Image
from test_data_check import REPO, write_voc_folder

from gluon_ssdcl import CenterLoss, get_model, initialize_params
from gluon_ssdcl.commands import detect
from gluon_ssdcl.data.datasets import get_dataset
from gluon_ssdcl.data.voc_check import clip_boxes
from gluon_ssdcl.embeddings.knn import knn_predict
from gluon_ssdcl.engine.checkpoint import load_model, save_checkpoint
from gluon_ssdcl.evaluation.inference import collect_positives, positive_loader

CLASSES = ['cat', 'dog']
CTX = [mx.cpu()]
IMAGE_MEAN, IMAGE_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def write_checkpoint(path, mode, dataset_root):
    net = get_model('ssd_64_tiny_center_custom', classes=CLASSES, embed_dim=2)
    initialize_params(net, CTX)
    center_loss = CenterLoss(len(CLASSES), 2)
    center_loss.initialize()
    meta = {'network': 'ssd_64_tiny_center_custom', 'classes': CLASSES, 'embed_dim': 2,
            'mode': mode, 'data_shape': 64, 'dataset': 'custom', 'dataset_root': dataset_root,
            'seed': 0}
    save_checkpoint(str(path), net, center_loss, meta)
    return str(path)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """{'center': params, 'softmax': params, 'root': VOC folder, 'images': [good images]}."""
    tmp = tmp_path_factory.mktemp('detect')
    items = {'a': [('cat', (5, 6, 30, 40))],
             'b': [('dog', (10, 10, 20, 20)), ('cat', (30, 5, 60, 45))],
             'c': [('dog', (40, 2, 62, 30))]}
    root = write_voc_folder(tmp / 'voc', items, {'train': ['a', 'b', 'c'], 'val': ['c']})
    rng = np.random.default_rng(0)
    images = []
    for name, (height, width) in (('wide.jpg', (40, 120)), ('tall.png', (90, 50))):
        path = str(tmp / name)
        cv2.imwrite(path, rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        images.append(path)
    return {'center': write_checkpoint(tmp / 'center.params', 'softmax-center', root),
            'softmax': write_checkpoint(tmp / 'softmax.params', 'softmax', root),
            'root': root, 'images': images}


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.filterwarnings('ignore:Parameter .* is not used')
def test_detect_image_scales_boxes_back_to_the_image(setup):
    net, _, _ = load_model(setup['center'], CTX)
    net.hybridize()
    img = mx.image.imread(setup['images'][0])  # 40 x 120
    found = detect.detect_image(net, img, CTX)
    # reference: GluonCV's resize (interp=9: area to shrink, bicubic to enlarge), then
    # normalisation and box scaling by hand
    resized = timage.imresize(img, 64, 64, interp=9).asnumpy()
    x = ((resized / 255.0 - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1)[None]
    ids, scores, bboxes = (o[0].asnumpy() for o in net(mx.nd.array(x)))
    kept = ids[:, 0] >= 0
    assert 0 < kept.sum() == len(found.ids) and found.embeddings is None
    np.testing.assert_array_equal(found.ids, ids[kept, 0])
    np.testing.assert_allclose(found.scores, scores[kept, 0], atol=1e-3)
    expected = np.clip(bboxes[kept] * [120 / 64, 40 / 64, 120 / 64, 40 / 64], 0,
                       [119, 39, 119, 39])
    np.testing.assert_allclose(found.bboxes, expected, atol=0.5)
    net.set_embeddings(infer=True)
    assert detect.detect_image(net, img, CTX).embeddings.shape == (len(found.ids), 2)


@pytest.mark.filterwarnings('ignore:Parameter .* is not used')
def test_detect_image_gives_what_the_validation_transform_gives(setup):
    """detect_image's input (deploy.preprocess) is SSDDefaultValTransform's to the bit, and its
    boxes are GluonCV's resize of the network's, clipped."""
    net, _, _ = load_model(setup['center'], CTX)
    net.hybridize()
    img = mx.image.imread(setup['images'][1])  # 90 x 50
    found = detect.detect_image(net, img, CTX)
    x, _ = SSDDefaultValTransform(64, 64)(img, np.zeros((0, 4)))
    ids, scores, bboxes = (o[0].asnumpy() for o in net(x.expand_dims(0)))
    kept = ids[:, 0] >= 0
    assert kept.any()
    np.testing.assert_array_equal(found.ids, ids[kept, 0])
    np.testing.assert_array_equal(found.scores, scores[kept, 0])
    np.testing.assert_array_equal(found.bboxes, clip_boxes(
        tbbox.resize(bboxes[kept], in_size=(64, 64), out_size=(50, 90)), 50, 90))


def test_main_writes_one_png_per_image(setup, tmp_path, capsys):
    out = tmp_path / 'out'
    assert detect.main(setup['images'] + ['--params', setup['center'], '-o', str(out),
                                          '--thresh', '0']) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / 'wide_detections.png'), str(out / 'tall_detections.png')]
    for path in printed:
        with Image.open(path) as image:
            assert image.format == 'PNG' and image.width > 100
    assert sorted(os.listdir(out)) == ['tall_detections.png', 'wide_detections.png']


def test_main_draws_detections_above_the_threshold(setup, tmp_path, monkeypatch):
    drawn = []

    def plot(img, bboxes, scores, ids, class_names, thresh):
        fig = plot_detections(img, bboxes, scores, ids, class_names, thresh)
        drawn.append((np.asarray(scores), len(fig.axes[0].patches)))
        return fig

    plot_detections = detect.plot_detections
    monkeypatch.setattr(detect, 'plot_detections', plot)
    assert detect.main(setup['images'][:1] + ['--params', setup['center'], '-o', str(tmp_path),
                                              '--thresh', '0.4']) == 0
    ((scores, rectangles),) = drawn
    assert rectangles == np.sum(scores >= 0.4)


def test_unreadable_images_are_reported_and_the_others_drawn(setup, tmp_path, capsys):
    corrupt = tmp_path / 'corrupt.jpg'
    corrupt.write_text('not an image')
    truncated = tmp_path / 'truncated.jpg'
    truncated.write_bytes(open(setup['images'][0], 'rb').read()[:-200])
    missing = tmp_path / 'missing.jpg'
    out = tmp_path / 'out'
    images = [setup['images'][0], str(corrupt), str(missing), str(truncated),
              setup['images'][1]]
    assert detect.main(images + ['--params', setup['center'], '-o', str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and 'Traceback' not in '\n'.join(err)
    for line, path in zip(err, (corrupt, missing, truncated)):
        assert line.startswith('error: ') and str(path) in line
    assert sorted(os.listdir(out)) == ['tall_detections.png', 'wide_detections.png']


def test_label_by_knn_relabels_with_the_training_gallery(setup, tmp_path, monkeypatch):
    drawn = []
    plot_detections = detect.plot_detections
    monkeypatch.setattr(detect, 'plot_detections',
                        lambda img, b, s, ids, *a: drawn.append(ids) or plot_detections(
                            img, b, s, ids, *a))
    assert detect.main(setup['images'][:1] + ['--params', setup['center'], '-o', str(tmp_path),
                                              '--label-by', 'knn', '--knn-k', '3',
                                              '--gallery-images', '2']) == 0
    # the reference: KNN over the positives of the first two training images
    net, _, _ = load_model(setup['center'], CTX)
    train, _ = get_dataset('custom', setup['root'], classes=CLASSES)
    gallery, labels, _ = collect_positives(net, positive_loader(train.take(2), net, 16), CTX)
    net.set_embeddings(infer=True)
    found = detect.detect_image(net, mx.image.imread(setup['images'][0]), CTX)
    np.testing.assert_array_equal(drawn[0], knn_predict(gallery, labels, found.embeddings, k=3))
    assert set(labels) == {0, 1} and len(gallery) >= 3


def test_training_gallery_uses_the_first_training_images(setup):
    net, _, checkpoint = load_model(setup['center'], CTX)
    one, one_labels = detect.training_gallery(net, checkpoint.meta, CTX, 1)
    two, _ = detect.training_gallery(net, checkpoint.meta, CTX, 2)
    assert one.shape[1] == 2 and 0 < len(one) < len(two)
    np.testing.assert_array_equal(two[:len(one)], one)
    assert set(one_labels) == {0}  # image 'a' holds one cat


def test_label_by_knn_is_refused_for_a_softmax_checkpoint(setup, tmp_path, capsys):
    out = tmp_path / 'out'
    assert detect.main(setup['images'] + ['--params', setup['softmax'], '-o', str(out),
                                          '--label-by', 'knn']) == 1
    one_line_error(capsys, 'error: ', 'center loss', 'softmax')
    assert not out.exists()


def test_bad_checkpoints_and_network_are_one_line_errors(setup, tmp_path, capsys):
    image = setup['images'][0]
    assert detect.main([image, '--params', str(tmp_path / 'missing.params')]) == 1
    one_line_error(capsys, 'missing.params', 'does not exist')
    (tmp_path / 'junk.params').write_text('junk')
    assert detect.main([image, '--params', str(tmp_path / 'junk.params')]) == 1
    one_line_error(capsys, 'junk.params')
    checkpoint = load_model(setup['center'], CTX)[2]
    mismatched = tmp_path / 'mismatched.params'  # weights of embed_dim 2, metadata says 3
    write_checkpoint(mismatched, 'softmax-center', setup['root'])
    net, center_loss, _ = load_model(setup['center'], CTX)
    save_checkpoint(str(mismatched), net, center_loss, {**checkpoint.meta, 'embed_dim': 3})
    assert detect.main([image, '--params', str(mismatched)]) == 1
    one_line_error(capsys, 'mismatched.params', 'does not fit', 'embed_dim 3')


@pytest.mark.parametrize('flags', [['--thresh', '2'], ['--label-by', 'nearest'],
                                   ['--knn-k', '0'], ['--gpus', 'zero'], []])
def test_bad_flags_exit_2_with_one_line(setup, capsys, flags):
    args = ['--params', setup['center']] + flags + (setup['images'][:1] if flags else [])
    with pytest.raises(SystemExit) as exit_info:
        detect.main(args)
    assert exit_info.value.code == 2
    one_line_error(capsys, 'error:')


def test_images_with_the_same_name_are_refused(setup, tmp_path, capsys):
    other = tmp_path / 'wide.png'
    Image.new('RGB', (30, 30)).save(other)
    with pytest.raises(SystemExit) as exit_info:
        detect.main([setup['images'][0], str(other), '--params', setup['center']])
    assert exit_info.value.code == 2
    one_line_error(capsys, 'wide_detections.png')


def test_module_runs_from_the_command_line(setup, tmp_path):
    proc = subprocess.run(
        [sys.executable, '-m', 'gluon_ssdcl.detect', setup['images'][1], '--params',
         setup['center'], '-o', str(tmp_path)], capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / 'tall_detections.png')
    assert os.path.isfile(proc.stdout.strip())
