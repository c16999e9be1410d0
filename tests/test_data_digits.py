"""Tests of gluon_ssdcl.data.digits: the generated digits data set."""
import glob
import inspect
import json
import logging
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from gluoncv.data import VOCDetection

import gluon_ssdcl.data
from gluon_ssdcl.commands import digits as digits_command
from gluon_ssdcl.data import digitset as digits
from gluon_ssdcl.data.digitset import (CLASSES, ensure_digits, mnist_sample, render_image,
                                       split_sources)

TINY_PARAMETERS = dict(num_train=12, num_val=4, image_size=96)
TINY = dict(TINY_PARAMETERS, progress=False)


class GluonCVDigits(VOCDetection):
    """GluonCV's own reader with our classes (its name check rejects '0': not lower case)."""
    CLASSES = CLASSES

    def _validate_class_names(self, class_list):
        pass


def read_files(folder):
    """{relative path: bytes} of every file under folder/VOC2007."""
    paths = glob.glob(os.path.join(folder, 'VOC2007', '**', '*.*'), recursive=True)
    return {os.path.relpath(p, folder): open(p, 'rb').read() for p in sorted(paths)}


def objects(root, split):
    """[(mnist_index, name)] of every object in `split`."""
    voc = os.path.join(root, 'VOC2007')
    ids = open(os.path.join(voc, 'ImageSets', 'Main', f'{split}.txt')).read().split()
    xml = [ET.parse(os.path.join(voc, 'Annotations', f'{i}.xml')).getroot() for i in ids]
    return [(int(o.find('mnist_index').text), o.find('name').text)
            for root in xml for o in root.iter('object')]


def mtimes(root):
    return [os.stat(os.path.join(root, *parts)).st_mtime_ns
            for parts in (('manifest.json',), ('VOC2007', 'JPEGImages', 'train_000000.jpg'))]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return ensure_digits(str(tmp_path_factory.mktemp('d') / 'digits'), seed=3, workers=2, **TINY)


def test_render_image_boxes_are_tight_around_the_ink():
    images, _ = mnist_sample()
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = render_image(rng, images[rng.choice(len(images), 6, replace=False)], image_size=96)
        assert out.image.shape == (96, 96, 3) and out.image.dtype == np.uint8
        assert 1 <= len(out.boxes) == len(out.masks) == len(out.placed) <= 6
        assert len(set(out.placed.tolist())) == len(out.placed)
        for (x0, y0, x1, y1), mask in zip(out.boxes, out.masks):
            assert 0 <= x0 < x1 <= 95 and 0 <= y0 < y1 <= 95
            ys, xs = np.nonzero(mask)
            # every ink pixel inside the box, and ink on each of its four edges
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x0, y0, x1, y1)


def test_render_image_limits_overlap():
    images, _ = mnist_sample()
    rng = np.random.default_rng(1)
    for _ in range(20):
        boxes = render_image(rng, images[:6], image_size=96, max_overlap=0.3).boxes
        areas = np.prod(boxes[:, 2:] - boxes[:, :2] + 1, axis=1)
        for i in range(len(boxes)):
            for j in range(i):
                low = np.maximum(boxes[i, :2], boxes[j, :2])
                inter = np.prod(np.clip(np.minimum(boxes[i, 2:], boxes[j, 2:]) - low + 1, 0, None))
                assert inter / min(areas[i], areas[j]) <= 0.3
                assert inter / (areas[i] + areas[j] - inter) <= 0.3


def test_split_sources_is_disjoint_and_per_class():
    _, labels = mnist_sample()
    train, val = split_sources(labels, 0.2, seed=0)
    assert not set(train) & set(val) and len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [100] * 10
    assert not np.array_equal(val, split_sources(labels, 0.2, seed=1)[1])
    with pytest.raises(ValueError, match='val_fraction'):
        split_sources(labels, 1.5, seed=0)


def test_layout_and_manifest(tiny):
    voc = os.path.join(tiny, 'VOC2007')
    assert len(glob.glob(os.path.join(voc, 'JPEGImages', '*.jpg'))) == 16
    assert len(glob.glob(os.path.join(voc, 'Annotations', '*.xml'))) == 16
    train_ids = open(os.path.join(voc, 'ImageSets', 'Main', 'train.txt')).read().split()
    assert train_ids == [f'train_{i:06d}' for i in range(12)]
    manifest = json.load(open(os.path.join(tiny, 'manifest.json')))
    assert (manifest['num_train'], manifest['seed'], manifest['image_size']) == (12, 3, 96)
    root = ET.parse(os.path.join(voc, 'Annotations', 'val_000000.xml')).getroot()
    assert root.find('filename').text == 'val_000000.jpg'
    size = root.find('size')
    assert [size.find(t).text for t in ('width', 'height', 'depth')] == ['96', '96', '3']
    assert all(o.find('difficult').text == '0' for o in root.iter('object'))


def test_gluoncv_reads_the_generator_boxes(tiny):
    """VOCDetection's labels are the rendered ink boxes (0-based, inclusive) and classes."""
    _, labels = mnist_sample()
    pools = dict(zip(digits.SPLITS, split_sources(labels, 0.2, seed=3)))
    for split, count in (('train', 12), ('val', 4)):
        dataset = GluonCVDigits(tiny, splits=[(2007, split)])
        assert len(dataset) == count
        for i in range(count):
            rng = digits._item_rng(3, split, i)
            out, sources = digits._render_item(rng, pools[split], 96, 1, 6)
            image, label = dataset[i]
            assert image.shape == (96, 96, 3)
            np.testing.assert_array_equal(label[:, :4], out.boxes)
            np.testing.assert_array_equal(label[:, 4], labels[sources])
            np.testing.assert_array_equal(label[:, 5], 0)


def test_train_and_val_use_disjoint_source_digits(tiny):
    _, labels = mnist_sample()
    train, val = objects(tiny, 'train'), objects(tiny, 'val')
    assert not {i for i, _ in train} & {i for i, _ in val}
    assert all(CLASSES[labels[i]] == name for i, name in train + val)


def test_same_seed_same_files_other_seed_other_files(tiny, tmp_path):
    first = read_files(tiny)  # made by 2 processes
    assert len([p for p in first if not p.endswith('.jpg')]) == 18  # 16 xml, 2 ImageSets
    assert read_files(ensure_digits(str(tmp_path / 'again'), seed=3, workers=1, **TINY)) == first
    other = read_files(ensure_digits(str(tmp_path / 'other'), seed=4, **TINY))
    assert all(first[p] != other[p] for p in first if p.endswith('.xml'))


def test_ensure_digits_reuses(tmp_path):
    root = str(tmp_path / 'digits')
    assert ensure_digits(root, seed=0, **TINY) == root
    before = mtimes(root)
    ensure_digits(root, seed=0, **TINY)
    assert mtimes(root) == before
    assert sorted(os.listdir(tmp_path)) == ['digits', 'digits.lock']  # no temporary folder left


def test_explicit_root_of_other_parameters_is_refused_and_kept(tmp_path):
    root = ensure_digits(str(tmp_path / 'digits'), **TINY)
    (tmp_path / 'digits' / 'notes.txt').write_text('mine')
    before, times = read_files(root), mtimes(root)
    with pytest.raises(ValueError) as error:
        ensure_digits(root, **dict(TINY, num_train=5, seed=2))
    message = str(error.value)
    assert '\n' not in message and root in message and 'another root' in message
    assert 'num_train=12, seed=0' in message and 'num_train=5, seed=2' in message
    assert 'num_val' not in message  # only the parameters that differ
    assert (tmp_path / 'digits' / 'notes.txt').read_text() == 'mine'
    assert read_files(root) == before and mtimes(root) == times


def test_default_roots_of_other_parameters_coexist(tmp_path, monkeypatch):
    monkeypatch.setenv('GLUON_SSDCL_DATA', str(tmp_path))
    first = ensure_digits(**TINY)
    assert first == str(tmp_path / 'digits-train12-val4-seed0-size96-d1-6-vf0.2')
    before, times = read_files(first), mtimes(first)
    second = ensure_digits(**dict(TINY, num_train=5))
    assert second == str(tmp_path / 'digits-train5-val4-seed0-size96-d1-6-vf0.2')
    assert json.load(open(os.path.join(second, 'manifest.json')))['num_train'] == 5
    assert len(os.listdir(os.path.join(second, 'VOC2007', 'JPEGImages'))) == 9
    assert read_files(first) == before and mtimes(first) == times
    assert ensure_digits(**TINY) == first and mtimes(first) == times


def test_default_root_names(tmp_path, monkeypatch):
    monkeypatch.setenv('GLUON_SSDCL_DATA', str(tmp_path))
    assert digits.default_root() == str(tmp_path / 'digits')
    assert digits.default_root(num_train=7000, val_fraction=0.2) == str(tmp_path / 'digits')
    assert digits.default_root(num_train=4000) == str(  # the default set before
        tmp_path / 'digits-train4000-val500-seed0-size300-d1-6-vf0.2')
    assert digits.default_root(num_train=64, num_val=16) == str(
        tmp_path / 'digits-train64-val16-seed0-size300-d1-6-vf0.2')
    assert digits.default_root(seed=1, min_digits=2, max_digits=3, val_fraction=0.25) == str(
        tmp_path / 'digits-train7000-val500-seed1-size300-d2-3-vf0.25')
    monkeypatch.setattr(digits, 'FORMAT_VERSION', 2)  # a new generator: new folders
    assert digits.default_root() == str(tmp_path / 'digits-v2')
    monkeypatch.delenv('GLUON_SSDCL_DATA')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    cache = tmp_path / 'home' / '.gluon_ssdcl' / 'datasets'
    assert digits.default_root(num_train=5) == str(
        cache / 'digits-train5-val500-seed0-size300-d1-6-vf0.2-v2')


def test_default_root_has_the_defaults_of_ensure_digits():
    def defaults(function):
        return {name: p.default for name, p in inspect.signature(function).parameters.items()}
    assert defaults(digits.default_root).items() <= defaults(ensure_digits).items()
    assert len(defaults(digits.default_root)) == 8  # 7 sizes and exclude_classes


def test_folders_and_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        root = ensure_digits(str(tmp_path / 'digits'), workers=2, **TINY)
    finally:
        os.umask(old)
    voc = os.path.join(root, 'VOC2007')
    modes = {path: stat.S_IMODE(os.stat(path).st_mode) for path in (
        root, voc, os.path.join(voc, 'JPEGImages'), os.path.join(root, 'manifest.json'),
        os.path.join(voc, 'JPEGImages', 'train_000000.jpg'), str(tmp_path / 'digits.lock'))}
    assert list(modes.values()) == [0o775] * 3 + [0o664] * 3, modes


def dead_pid():
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, '-c', ''])
    process.wait()
    return process.pid


def test_ensure_digits_ignores_half_written_and_foreign_folders(tmp_path):
    root = str(tmp_path / 'digits')
    dead = dead_pid()
    leftovers = [f'digits.tmp-{dead}-0a1b', f'digits.tmp-{os.getpid()}-2c3d',
                 'digits.tmp-crashed', f'other.tmp-{dead}-4e5f', f'digits.tmp-{dead}-6a7b',
                 f'digits.tmp-{dead}-8c9d']
    for name in leftovers:
        (tmp_path / name / 'VOC2007' / 'JPEGImages').mkdir(parents=True)
    for name, pid in ((leftovers[0], dead), (leftovers[1], os.getpid()), (leftovers[3], dead),
                      (leftovers[5], dead + 1)):  # the last one names another process
        (tmp_path / name / digits.TMP_MARKER).write_text(
            json.dumps({'generator': digits.GENERATOR, 'pid': pid}))
    (tmp_path / leftovers[4] / 'thesis.tex').write_text("a user's file, no marker of ours")
    os.makedirs(root)  # empty: fine to build into
    ensure_digits(root, **TINY)
    assert os.path.isfile(os.path.join(root, 'manifest.json'))
    assert digits.TMP_MARKER not in os.listdir(root)
    # only the leftover of this root that a dead process of ours marked as its own is removed
    assert sorted(os.listdir(tmp_path)) == sorted(['digits', 'digits.lock'] + leftovers[1:])
    assert (tmp_path / leftovers[4] / 'thesis.tex').read_text().startswith("a user's")
    os.remove(os.path.join(root, 'manifest.json'))  # unfinished or not ours: left alone
    with pytest.raises(ValueError, match='manifest.json'):
        ensure_digits(root, **TINY)
    with open(os.path.join(root, 'manifest.json'), 'w') as f:
        json.dump({'someone': 'else'}, f)
    with pytest.raises(ValueError, match='manifest.json'):
        ensure_digits(root, **TINY)
    assert os.path.isdir(os.path.join(root, 'VOC2007'))


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return render_image(*args, **kwargs)

    monkeypatch.setattr(digits, 'render_image', interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_digits(str(tmp_path / 'digits'), workers=1, **TINY)
    assert os.listdir(tmp_path) == ['digits.lock']


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('GLUON_SSDCL_DATA', str(tmp_path))
    assert digits.default_root() == os.path.join(str(tmp_path), 'digits')
    assert ensure_digits(**TINY) == digits.default_root(**TINY_PARAMETERS)
    assert os.path.dirname(ensure_digits(**TINY)) == str(tmp_path)


def test_bad_parameters(tmp_path):
    for bad in (dict(num_train=0), dict(image_size=16), dict(min_digits=3, max_digits=2)):
        with pytest.raises(ValueError):
            ensure_digits(str(tmp_path / 'digits'), **dict(TINY, **bad))
    assert os.listdir(tmp_path) == []


def test_mnist_sample():
    images, labels = mnist_sample()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and np.bincount(labels).tolist() == [500] * 10
    assert not images.flags.writeable and not labels.flags.writeable
    assert gluon_ssdcl.data.mnist_sample is mnist_sample
    assert not hasattr(digits, 'load_mnist') and 'load_mnist' not in gluon_ssdcl.data.__all__


def test_command_line(tmp_path, capsys, monkeypatch):
    def no_basic_config(*args, **kwargs):
        pytest.fail('main() configured logging: only program() may')
    monkeypatch.setattr(logging, 'basicConfig', no_basic_config)
    root = str(tmp_path / 'cli')
    argv = ['--root', root, '--num-train', '3', '--num-val', '2', '--image-size', '64']
    assert digits_command.main(argv) == 0
    out = capsys.readouterr().out
    assert f'digits data set at {root}: 3 train + 2 val images' in out and 'MiB on disk' in out
    assert digits_command.main(argv[:-2] + ['--num-train', '4']) == 1  # another size: another root
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: ') and root in line and 'num_train=3' in line


@pytest.mark.parametrize('flags, named', [
    (['--num-train', '0'], '--num-train'), (['--num-val', '-1'], '--num-val'),
    (['--workers', 'two'], '--workers'), (['--image-size', '16'], '--image-size'),
    (['--min-digits', '3', '--max-digits', '2'], '--max-digits')])
def test_command_line_bad_flags_are_one_line(tmp_path, capsys, flags, named):
    root = tmp_path / 'cli'
    with pytest.raises(SystemExit) as exit_:
        digits_command.main(['--root', str(root)] + flags)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert named in line and 'usage' not in line
    assert not root.exists()


def test_command_line_refuses_a_foreign_folder_in_one_line(tmp_path, capsys):
    foreign = tmp_path / 'photos'
    foreign.mkdir()
    (foreign / 'holiday.jpg').write_bytes(b'not ours')
    assert digits_command.main(['--root', str(foreign), '--num-train', '3', '--num-val', '2']) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: ') and str(foreign) in line and 'manifest.json' in line
    assert os.listdir(foreign) == ['holiday.jpg']
