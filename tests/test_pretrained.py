"""Shipped weights: slim checkpoints, get_model(pretrained=True) offline and --pretrained."""
import os
import socket

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from gluon_ssdcl import CenterLoss, get_model, initialize_params, load_model
from gluon_ssdcl.embeddings.class_bank import make_bank, save_bank
from gluon_ssdcl.engine.checkpoint import load_checkpoint, save_checkpoint, slim_checkpoint
from gluon_ssdcl.model import pretrained
from gluon_ssdcl.model.zoo import DIGIT_CLASSES
from gluon_ssdcl.utils.files import file_sha256

NAME = 'ssd_64_tiny_center_digits'
SUFFIXES = ('.params', '.state', '.openset.npz')


def trained_checkpoint(path, embed_dim=16):
    """A digits checkpoint of the tiny network as get_model builds it, with trainer states
    (random weights)."""
    net = get_model(NAME, embed_dim=embed_dim)
    initialize_params(net, [mx.cpu()])
    center_loss = CenterLoss(len(DIGIT_CLASSES), embed_dim)
    center_loss.initialize()
    center_loss.centers.weight.set_data(mx.nd.random.normal(shape=(10, embed_dim)))
    trainer = mx.gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1,
                                                             'momentum': 0.9})
    save_checkpoint(path, net, center_loss, {
        'network': NAME, 'zoo_revision': 2, 'classes': list(DIGIT_CLASSES), 'embed_dim': embed_dim,
        'embed_hidden': 0, 'mode': 'softmax-center', 'dataset': 'digits', 'epoch': 3},
        net_trainer=trainer)
    return path


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A package weights folder shipping NAME (a slim checkpoint and a bank file), recorded in
    SHIPPED; returns (weights folder, the user's root for the copies)."""
    weights = tmp_path / 'weights'
    weights.mkdir()
    source = trained_checkpoint(str(tmp_path / 'run_best.params'))
    slim_checkpoint(source, str(weights / NAME))
    rng = np.random.default_rng(0)
    save_bank(make_bank(DIGIT_CLASSES, rng.normal(size=(40, 16)), np.arange(40) % 10,
                        params_sha256=file_sha256(str(weights / (NAME + '.params')))),
              str(weights / (NAME + '.openset.npz')))
    record = pretrained.Shipped({s: file_sha256(str(weights / (NAME + s))) for s in SUFFIXES},
                                'made by a test', '0' * 40, 0.0)
    monkeypatch.setattr(pretrained, 'SHIPPED', {NAME: record})
    monkeypatch.setattr(pretrained, 'WEIGHTS_DIR', str(weights))
    return weights, tmp_path / 'home' / 'models'


def test_a_slim_checkpoint_holds_float16_weights_and_no_trainer_and_loads_as_float32(tmp_path):
    source = trained_checkpoint(str(tmp_path / 'run_best.params'))
    stem = slim_checkpoint(source, str(tmp_path / 'slim'))
    stored = mx.nd.load(stem + '.params')
    original = load_checkpoint(source)
    assert original.net_trainer_states is not None
    assert set(stored) == set(original.net_params) and len(stored) > 10
    assert all(a.dtype == np.float16 for a in stored.values())
    assert os.path.getsize(stem + '.params') < 0.6 * os.path.getsize(source)
    slim = load_checkpoint(stem + '.params')
    assert slim.net_trainer_states is None and slim.center_trainer_states is None
    assert slim.meta['epoch'] == 3 and slim.meta['classes'] == list(DIGIT_CLASSES)
    model = load_model(stem + '.params')
    for name, param in model.net._collect_params_with_prefix().items():  # noqa: SLF001
        assert param.data().dtype == np.float32
        want = original.net_params[name].asnumpy().astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(param.data().asnumpy(), want)
    np.testing.assert_array_equal(model.centers.asnumpy(), original.centers.asnumpy())


def test_get_model_pretrained_loads_the_shipped_weights_without_network(shipped, monkeypatch):
    weights, root = shipped

    def no_network(*args, **kwargs):
        raise AssertionError('network access')
    monkeypatch.setattr(socket.socket, 'connect', no_network)
    monkeypatch.setattr(socket, 'create_connection', no_network)
    net = get_model(NAME, pretrained=True, root=str(root))
    for suffix in SUFFIXES:
        assert (root / (NAME + suffix)).read_bytes() == (weights / (NAME + suffix)).read_bytes()
    reference = load_model(str(weights / (NAME + '.params'))).net
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    with mx.autograd.train_mode():
        got, want = net(x), reference(x)
    np.testing.assert_array_equal(got[0].asnumpy(), want[0].asnumpy())
    # a second call reads the verified copies
    assert get_model(NAME, pretrained=True, root=str(root)).classes == list(DIGIT_CLASSES)


def test_a_damaged_shipped_file_is_one_error_and_nothing_is_copied(shipped):
    weights, root = shipped
    path = weights / (NAME + '.params')
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='damaged.*reinstall gluon_ssdcl') as err:
        get_model(NAME, pretrained=True, root=str(root))
    assert str(path) in str(err.value) and '\n' not in str(err.value)
    assert not (root / (NAME + '.params')).exists()


def test_a_changed_copy_is_refused_not_replaced_and_a_registered_bank_is_kept(shipped):
    _, root = shipped
    get_model(NAME, pretrained=True, root=str(root))
    bank = root / (NAME + '.openset.npz')
    bank.write_bytes(b'a bank with a registered class')
    get_model(NAME, pretrained=True, root=str(root))
    assert bank.read_bytes() == b'a bank with a registered class'
    state = root / (NAME + '.state')
    state.write_bytes(b'changed')
    with pytest.raises(ValueError, match='delete it and it is copied again'):
        pretrained.shipped_checkpoint(NAME, str(root))
    assert state.read_bytes() == b'changed'


def test_shipped_weights_that_do_not_fit_the_default_network_are_one_error(tmp_path,
                                                                          monkeypatch):
    stem = slim_checkpoint(trained_checkpoint(str(tmp_path / 'x.params'), embed_dim=2),
                           str(tmp_path / NAME))
    monkeypatch.setattr(pretrained, 'SHIPPED', {NAME: pretrained.Shipped(
        {s: file_sha256(stem + s) for s in SUFFIXES[:2]}, '', '', 0.0)})
    monkeypatch.setattr(pretrained, 'WEIGHTS_DIR', str(tmp_path))
    with pytest.raises(ValueError, match=f'does not fit {NAME}: reinstall') as err:
        get_model(NAME, pretrained=True, root=str(tmp_path / 'root'))
    assert '\n' not in str(err.value)


def test_pretrained_for_a_model_without_shipped_weights_names_what_ships(shipped):
    with pytest.raises(ValueError, match=f'no pretrained weights ship for ssd_64_tiny_center_'
                                         f'custom .shipped: {NAME}'):
        get_model('ssd_64_tiny_center_custom', pretrained=True, classes=['a'])
    with pytest.raises(ValueError, match='embed_dim cannot be given'):
        get_model(NAME, pretrained=True, embed_dim=4, root=str(shipped[1]))


def test_gluoncv_names_keep_gluoncv_pretrained(monkeypatch):
    import gluoncv
    calls = []
    monkeypatch.setattr(gluoncv.model_zoo, 'get_model',
                        lambda name, **kwargs: calls.append((name, kwargs)) or 'net')
    assert get_model('ssd_300_vgg16_atrous_voc', pretrained=True) == 'net'
    assert calls == [('ssd_300_vgg16_atrous_voc', {'pretrained': True})]


def test_commands_take_pretrained_in_place_of_params(shipped, tmp_path, monkeypatch, capsys):
    from gluon_ssdcl.commands import detect, evaluate, export, register
    _, root = shipped
    monkeypatch.setattr(pretrained, 'DEFAULT_ROOT', str(root))
    monkeypatch.setattr(pretrained, 'DEFAULT_PRETRAINED', NAME)
    image = tmp_path / 'digit.png'
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    out = tmp_path / 'drawn'
    assert detect.main(['--pretrained', str(image), '-o', str(out)]) == 0
    assert (out / 'digit_detections.png').is_file()
    exported = tmp_path / 'exported'
    assert export.main(['--pretrained', '-o', str(exported)]) == 0
    assert any(p.name.endswith('-symbol.json') for p in exported.iterdir())
    for command, argv in ((detect, [str(image)]), (evaluate, []), (export, []),
                          (register, ['--name', 'x', f'{image}:1,1,9,9'])):
        with pytest.raises(SystemExit) as both:
            command.main(argv + ['--pretrained', '--params', 'x'])
        assert both.value.code == 2
        with pytest.raises(SystemExit) as neither:
            command.main(argv)
        assert neither.value.code == 2
    err = capsys.readouterr().err
    assert 'not allowed with argument' in err and 'is required' in err


def test_the_checkpoint_command_writes_a_slim_copy(tmp_path, capsys):
    from gluon_ssdcl.commands.checkpoint import main as checkpoint_main
    source = trained_checkpoint(str(tmp_path / 'run_best.params'))
    stem = str(tmp_path / 'out' / 'slim')
    os.makedirs(os.path.dirname(stem))
    assert checkpoint_main(['--slim', str(tmp_path / 'run'), '-o', stem]) == 0
    assert capsys.readouterr().out.split() == [stem + '.params', stem + '.state']
    assert all(a.dtype == np.float16 for a in mx.nd.load(stem + '.params').values())
    assert load_checkpoint(stem + '.params').meta['epoch'] == 3 and os.path.isfile(source)
    with pytest.raises(SystemExit) as missing_output:
        checkpoint_main(['--slim', source])
    assert missing_output.value.code == 2 and '-o/--output' in capsys.readouterr().err


def test_the_shipped_default_model_is_intact_and_detects_digits(tmp_path, monkeypatch):
    """The real shipped files: checksums, offline loading, and the mAP of 50 new validation
    images at most 0.10 below the recorded validation mAP."""
    from gluon_ssdcl.data.datasets import get_dataset, get_val_loader
    from gluon_ssdcl.data.digitset import ensure_digits
    from gluon_ssdcl.evaluation.inference import detection_map
    name = pretrained.DEFAULT_PRETRAINED
    shipped = pretrained.SHIPPED[name]
    assert set(shipped.sha256) == set(SUFFIXES)
    for suffix, sha in shipped.sha256.items():
        path = os.path.join(pretrained.WEIGHTS_DIR, name + suffix)
        assert file_sha256(path) == sha, path
    assert sum(os.path.getsize(os.path.join(pretrained.WEIGHTS_DIR, name + s))
               for s in SUFFIXES) <= 6 * 2**20

    def no_network(*args, **kwargs):
        raise AssertionError('network access')
    monkeypatch.setattr(socket.socket, 'connect', no_network)
    net = get_model(name, pretrained=True, root=str(tmp_path / 'models'))
    net.hybridize()
    root = ensure_digits(str(tmp_path / 'digits'), num_train=1, num_val=50, seed=1,
                         progress=False)
    _, val = get_dataset('digits', root)
    assert len(val) == 50
    mean_ap, _ = detection_map(net, get_val_loader(val, 256, 256, 10), [mx.cpu()],
                               list(DIGIT_CLASSES))
    assert mean_ap >= shipped.val_map - 0.10, (mean_ap, shipped.val_map)
