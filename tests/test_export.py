"""Tests of gluon_ssdcl.deploy.export and gluon-ssdcl export: the exported graph computes what
the Gluon net computes, and an export is all or nothing."""
import errno
import glob
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

from gluon_ssdcl import CenterLoss, get_model, initialize_params
from gluon_ssdcl.commands import export as export_command
from gluon_ssdcl.deploy import export, preprocess
from gluon_ssdcl.engine.checkpoint import load_model, save_checkpoint

NAME = 'ssd_64_tiny_center_custom'
CLASSES = ['cat', 'dog']
SIZE = 64
IMAGE_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGE_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# SymbolBlock.imports cannot tell the input's type before the first call
pytestmark = pytest.mark.filterwarnings('ignore:Cannot decide type')


def write_checkpoint(path, **meta_changes):
    """A checkpoint of a 2-class tiny network with 2-D embeddings and set centers; its metadata
    with ``meta_changes``."""
    net = get_model(NAME, classes=CLASSES, embed_dim=2)
    initialize_params(net, [mx.cpu()])
    center_loss = CenterLoss(len(CLASSES), 2)
    center_loss.initialize()
    center_loss.centers.weight.set_data(mx.nd.array([[1.5, -2.0], [-0.5, 3.25]]))
    meta = {'network': NAME, 'classes': CLASSES, 'embed_dim': 2, 'mode': 'softmax-center',
            'data_shape': SIZE, 'dataset': 'custom', 'seed': 0, 'epoch': 3, **meta_changes}
    save_checkpoint(str(path), net, center_loss, meta)
    return str(path)


@pytest.fixture(scope='module')
def params(tmp_path_factory):
    """The checkpoint of :func:`write_checkpoint`, alone in its folder."""
    return write_checkpoint(tmp_path_factory.mktemp('export') / 'run_best.params')


def gluon_outputs(params, x, embeddings=False):
    """The (not hybridized) Gluon net's inference outputs on x (1, 3, S, S), as NumPy."""
    net, _, _ = load_model(params)
    net.set_embeddings(infer=embeddings)
    return [o.asnumpy() for o in net(mx.nd.array(x))]


def imported_outputs(paths, x):
    block = mx.gluon.SymbolBlock.imports(paths['symbol'], ['data'], paths['params'])
    return [o.asnumpy() for o in block(mx.nd.array(x))]


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    assert (expected[0] >= 0).any(), 'no detection kept: the comparison would be empty'
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def random_input(seed=0):
    return np.random.default_rng(seed).normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)


def test_export_without_embeddings_matches_the_gluon_net(params, tmp_path):
    paths = export.export_model(params, str(tmp_path))
    assert paths['symbol'] == str(tmp_path / f'{NAME}-symbol.json')
    assert paths['params'] == str(tmp_path / f'{NAME}-0000.params')
    x = random_input()
    actual = imported_outputs(paths, x)
    assert len(actual) == 3
    assert_same(actual, gluon_outputs(params, x))


def test_export_with_embeddings_has_the_fourth_output(params, tmp_path):
    paths = export.export_model(params, str(tmp_path), embeddings=True)
    x = random_input(1)
    actual = imported_outputs(paths, x)
    assert len(actual) == 4 and actual[3].shape[-1] == 2
    assert_same(actual, gluon_outputs(params, x, embeddings=True))


def test_export_with_preprocess_takes_hwc_pixels(params, tmp_path):
    paths = export.export_model(params, str(tmp_path), embeddings=True, preprocess=True)
    image = np.random.default_rng(2).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    normalised = ((image.astype(np.float32) / 255 - IMAGE_MEAN) / IMAGE_STD).transpose(0, 3, 1, 2)
    actual = imported_outputs(paths, image.astype(np.float32))
    assert_same(actual, gluon_outputs(params, normalised, embeddings=True))


@pytest.mark.parametrize('graph_preprocess', [False, True])
def test_preprocess_of_an_image_feeds_the_exported_graph(params, tmp_path, graph_preprocess):
    """deploy.preprocess with the export's meta.json: the imported graph gives the Gluon net's
    outputs on the validation transform of the same (not square) image."""
    paths = export.export_model(params, str(tmp_path), embeddings=True,
                                preprocess=graph_preprocess)
    with open(paths['meta']) as f:
        meta = json.load(f)
    assert meta['input']['helper'] == 'gluon_ssdcl.deploy.preprocess'
    assert 'pixels of the S x S input' in meta['input']['boxes']
    image = np.random.default_rng(3).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    x, scale = preprocess(image, meta)
    assert x.shape == tuple(meta['input']['shape'])
    np.testing.assert_array_equal(scale, [90 / SIZE, 50 / SIZE] * 2)
    reference, _ = SSDDefaultValTransform(SIZE, SIZE)(mx.nd.array(image, dtype='uint8'),
                                                      np.zeros((0, 4)))
    assert_same(imported_outputs(paths, x),
                gluon_outputs(params, reference.expand_dims(0).asnumpy(), embeddings=True))


def test_centers_and_meta_files(params, tmp_path):
    paths = export.export_model(params, str(tmp_path), preprocess=True)
    _, center_loss, _ = load_model(params)
    centers = np.load(paths['centers'])
    assert paths['centers'] == str(tmp_path / f'{NAME}-centers.npy')
    assert centers.dtype == np.float32 and centers.shape == (2, 2)
    np.testing.assert_array_equal(centers, center_loss.centers.weight.data().asnumpy())
    np.testing.assert_array_equal(centers, [[1.5, -2.0], [-0.5, 3.25]])
    with open(paths['meta']) as f:
        meta = json.load(f)
    assert paths['meta'] == str(tmp_path / f'{NAME}-meta.json')
    assert meta['classes'] == CLASSES and meta['embed_dim'] == 2
    assert meta['mode'] == 'softmax-center' and meta['base_size'] == SIZE
    assert meta['embeddings'] is False and meta['preprocess'] is True
    assert meta['input']['layout'] == 'NHWC' and meta['input']['shape'] == [1, SIZE, SIZE, 3]
    assert meta['outputs'] == ['ids', 'scores', 'bboxes']
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths.values())


def test_export_leaves_mxnet_as_it_was(params, tmp_path):
    """GluonCV's export_block removes mx.sym.contrib.box_encode for the rest of the process."""
    paths = export.export_model(params, str(tmp_path))
    assert 'box_encode' in mx.sym.contrib.__dict__
    with open(paths['symbol']) as f:
        assert 'box_encode' not in f.read()


def test_export_model_refuses_a_file_as_folder(params, tmp_path):
    (tmp_path / 'a_file').write_text('not a folder')
    with pytest.raises(NotADirectoryError, match='a_file'):
        export.export_model(params, str(tmp_path / 'a_file'))


def one_line_error(capsys, *words):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in err and 'usage' not in err, err
    for word in words:
        assert word in err, err
    return captured.out


def test_cli_bad_flag_exits_2_with_one_line(params, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_command.main(['--params', params, '--no-such-flag'])
    assert exit_info.value.code == 2
    one_line_error(capsys, '--no-such-flag')


def test_cli_output_dir_that_is_a_file_exits_2(params, tmp_path, capsys):
    (tmp_path / 'a_file').write_text('not a folder')
    with pytest.raises(SystemExit) as exit_info:
        export_command.main(['--params', params, '-o', str(tmp_path / 'a_file')])
    assert exit_info.value.code == 2
    one_line_error(capsys, '-o/--output-dir')


def test_cli_missing_checkpoint_exits_1_naming_it(tmp_path, capsys):
    missing = str(tmp_path / 'missing.params')
    assert export_command.main(['--params', missing, '-o', str(tmp_path / 'out')]) == 1
    one_line_error(capsys, 'error:', missing)
    assert not os.path.exists(tmp_path / 'out')


def test_cli_unreadable_checkpoint_exits_1_naming_it(tmp_path, capsys):
    junk = tmp_path / 'junk.params'
    junk.write_bytes(os.urandom(256))
    assert export_command.main(['--params', str(junk)]) == 1
    one_line_error(capsys, 'error:', str(junk))
    assert os.listdir(tmp_path) == ['junk.params']


def test_cli_mismatched_checkpoint_exits_1_naming_it(tmp_path, capsys):
    path = write_checkpoint(tmp_path / 'three.params', classes=['a', 'b', 'c'])
    assert export_command.main(['--params', path, '-o', str(tmp_path / 'out')]) == 1
    one_line_error(capsys, 'error:', path, 'does not fit')


def test_export_model_refuses_an_unknown_mode(tmp_path):
    path = write_checkpoint(tmp_path / 'odd.params', mode='triplet')
    with pytest.raises(ValueError, match=f"{path}.*'triplet'"):
        export.export_model(path)
    assert sorted(os.listdir(tmp_path)) == ['odd.params', 'odd.state']


def test_cli_writes_beside_the_checkpoint_and_prints_the_paths(params, capsys):
    assert export_command.main(['--params', params, '--embeddings', '--preprocess']) == 0
    captured = capsys.readouterr()
    printed = captured.out.split()
    folder = os.path.dirname(params)
    assert sorted(printed) == sorted(os.path.join(folder, f'{NAME}-{suffix}') for suffix in
                                     ('symbol.json', '0000.params', 'centers.npy', 'meta.json'))
    assert all(os.path.isfile(path) for path in printed)
    assert not glob.glob(os.path.join(folder, '*.tmp'))
    with open(os.path.join(folder, f'{NAME}-meta.json')) as f:
        meta = json.load(f)
    assert meta['embeddings'] is True and meta['preprocess'] is True
    assert meta['outputs'] == ['ids', 'scores', 'bboxes', 'embeddings']


def test_nms_by_hand():
    """Per class: a box overlapping a better one of its class is suppressed, one of another
    class is not; candidates at or below 0.01, or of class -1, are not detections."""
    ids = np.array([0, 0, 1, 0, -1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.01])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30],
                      [0, 0, 10, 10], [40, 40, 50, 50]], dtype=float)
    kept_ids, kept_scores, kept_boxes = export.nms(ids, scores, boxes)
    assert kept_ids.tolist() == [0, 1, 0] and kept_scores.tolist() == [0.9, 0.7, 0.6]
    np.testing.assert_array_equal(kept_boxes, boxes[[0, 2, 3]])
    assert export.nms(ids, scores, boxes, post_nms=1)[0].tolist() == [0]
    # IoU of boxes 0 and 1 is 81 / 119 = 0.68: kept with a threshold above it
    assert export.nms(ids, scores, boxes, nms_thresh=0.7)[0].tolist() == [0, 0, 1, 0]


def test_onnx_detections_match_mxnets_on_a_trained_model(tmp_path):
    """A tiny model trained 3 epochs on digits; on validation images, onnxruntime's candidates
    through nms() give every MXNet detection (score >= 0.05) with the same class, score and box
    to 1e-4, and the same embedding."""
    ort = pytest.importorskip('onnxruntime', reason='the onnx extra is not installed')
    from gluon_ssdcl.commands.train import main
    from gluon_ssdcl.data.datasets import get_dataset
    from gluon_ssdcl.data.digitset import ensure_digits
    root = ensure_digits(str(tmp_path / 'digits'), num_train=48, num_val=8, progress=False)
    prefix = str(tmp_path / 'run')
    assert main(['--network', 'tiny', '--data-shape', '64', '--dataset-root', root,
                 '--digits-train', '48', '--digits-val', '8', '--epochs', '3', '--batch-size',
                 '8', '-j', '0', '--embed-dim', '2', '--save-prefix', prefix, '--center-loss',
                 '--knn-k', '1', '--warmup-iters', '2']) == 0
    paths = export.export_model(prefix, str(tmp_path / 'out'), embeddings=True, onnx=True)
    net = load_model(prefix).net
    net.set_embeddings(infer=True)
    session = ort.InferenceSession(paths['onnx'], providers=['CPUExecutionProvider'])
    _, val = get_dataset('digits', root)
    with open(paths['meta']) as f:
        meta = json.load(f)
    matched = 0
    for index in range(4):
        x, _ = preprocess(val[index][0], meta)
        ids, scores, boxes, embeddings = [o[0].asnumpy() for o in net(mx.nd.array(x))]
        found = export.nms(*session.run(None, {'data': x}))
        for k in np.flatnonzero(scores[:, 0] >= 0.05):
            same = np.flatnonzero((found[0] == ids[k, 0])
                                  & (np.abs(found[1] - scores[k, 0]) <= 1e-4)
                                  & (np.abs(found[2] - boxes[k]).max(axis=1) <= 1e-4))
            assert len(same), (ids[k], scores[k], boxes[k])
            np.testing.assert_allclose(found[3][same[0]], embeddings[k], atol=1e-4)
            matched += 1
    assert matched >= 30
    assert os.path.getsize(paths['onnx']) > 10000


def test_onnx_file_loads_without_warnings_and_the_log_names_it(params, tmp_path, caplog):
    """The weights are initializers, not graph inputs: onnxruntime (its default logging, in a
    fresh process) loads the file without a warning; the log names the final file."""
    pytest.importorskip('onnxruntime', reason='the onnx extra is not installed')
    out = tmp_path / 'out'
    with caplog.at_level('INFO'):
        paths = export.export_model(params, str(out), onnx=True)
    messages = [record.getMessage() for record in caplog.records]
    assert any(paths['onnx'] in message for message in messages), messages
    assert not [m for m in messages if '.tmp' in m or f'{NAME}-export-' in m], messages
    code = ("import onnxruntime as ort, sys\n"
            "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
            "print(','.join(i.name for i in s.get_inputs()))\n")
    proc = subprocess.run([sys.executable, '-c', code, paths['onnx']], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == 'data', proc.stderr
    assert proc.stderr == '', proc.stderr[:500]


def folder_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_export_refuses_to_replace_an_earlier_export_without_overwrite(params, tmp_path,
                                                                       capsys):
    out = tmp_path / 'out'
    assert export_command.main(['--params', params, '-o', str(out), '--onnx']) == 0
    capsys.readouterr()
    before = folder_bytes(out)
    assert export_command.main(['--params', params, '-o', str(out), '--embeddings']) == 1
    one_line_error(capsys, 'error:', str(out / NAME), '--overwrite')
    assert folder_bytes(out) == before
    assert export_command.main(['--params', params, '-o', str(out), '--embeddings',
                                '--overwrite']) == 0
    printed = capsys.readouterr().out.split()
    # one export in the folder: the earlier one's .onnx, which this one has not, is gone
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in printed)
    assert f'{NAME}.onnx' not in os.listdir(out)
    with open(out / f'{NAME}-meta.json') as f:
        assert json.load(f)['embeddings'] is True


def test_a_failure_mid_export_leaves_the_earlier_export_whole(params, tmp_path, capsys,
                                                              monkeypatch):
    """A disk that fills after the new graph is written: the earlier files are as they were,
    and nothing of the new export is left."""
    out = tmp_path / 'out'
    export.export_model(params, str(out), embeddings=True)
    before = folder_bytes(out)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')  # as a failed write: no file
    monkeypatch.setattr(np, 'save', full_disk)
    assert export_command.main(['--params', params, '-o', str(out), '--overwrite']) == 1
    # the line names the file that could not be written, not its temporary name
    one_line_error(capsys, f"error: cannot write {out / NAME}-centers.npy: [Errno 28] No space")
    assert folder_bytes(out) == before
    imported_outputs(export.export_paths(str(out), NAME), random_input())  # still imports


def test_a_failure_while_moving_the_files_into_place_restores_the_earlier_export(
        params, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    export.export_model(params, str(out), onnx=True)
    before = folder_bytes(out)
    replace = os.replace
    final = export.export_paths(str(out), NAME)

    def failing_replace(source, target):
        # the new centers, after the new graph files are in place (not the earlier ones back)
        if target == final['centers'] and 'earlier' not in os.path.basename(source):
            raise OSError(errno.EIO, 'Input/output error', target)
        replace(source, target)
    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(OSError, match='Input/output error'):
        export.export_model(params, str(out), embeddings=True, overwrite=True)
    assert folder_bytes(out) == before
