"""Tests of gluon_ssdcl.data.check: every bad-input case is reported with its file."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import ImageFile

from gluon_ssdcl.commands.check_data import main
from gluon_ssdcl.data.voc_check import (ERROR, WARNING, box_problem, check_image, check_voc_folder,
                                        resolve_voc_root, split_path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def voc_xml(width, height, objects, image_id='x'):
    """A VOC annotation; objects: [(name, (xmin, ymin, xmax, ymax))], 0-based (written + 1)."""
    body = ''.join(
        f'<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>'
        f'<ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox></object>'
        for name, (x0, y0, x1, y1) in objects)
    return (f'<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width>'
            f'<height>{height}</height><depth>3</depth></size>{body}</annotation>')


def write_voc_folder(root, items, splits, size=(64, 48)):
    """Write a VOC-layout folder. items: {image_id: objects} (see voc_xml); splits: {split: ids}.
    Images are grey with a white rectangle on each box."""
    for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    width, height = size
    for image_id, objects in items.items():
        image = np.full((height, width, 3), 90, np.uint8)
        for _, (x0, y0, x1, y1) in objects:
            image[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = 255
        cv2.imwrite(os.path.join(root, 'JPEGImages', f'{image_id}.jpg'), image)
        write(os.path.join(root, 'Annotations', f'{image_id}.xml'),
              voc_xml(width, height, objects, image_id))
    for split, ids in splits.items():
        write(os.path.join(root, 'ImageSets', 'Main', f'{split}.txt'),
              ''.join(f'{i}\n' for i in ids))
    return str(root)


def write(path, text):
    with open(path, 'w') as f:
        f.write(text)


def good_folder(tmp_path, sub='voc'):
    items = {'a': [('cat', (5, 6, 30, 40))],
             'b': [('dog', (10, 10, 20, 20)), ('cat', (30, 5, 60, 45))],
             'c': [('dog', (2, 3, 40, 30))]}
    return write_voc_folder(tmp_path / sub, items, {'train': ['a', 'b'], 'val': ['c']})


def run_check(cwd, *args):
    """``python -m gluon_ssdcl.data.check ARGS`` in a new process."""
    return subprocess.run([sys.executable, '-m', 'gluon_ssdcl.data.check', *args],
                          capture_output=True, text=True, cwd=str(cwd),
                          env=dict(os.environ, PYTHONPATH=REPO))


def remove(*parts):
    return lambda root: os.remove(os.path.join(root, *parts))


def corrupt_jpeg(root):
    write(os.path.join(root, 'JPEGImages', 'a.jpg'), 'not a jpeg at all')


def truncate_jpeg(root):
    path = os.path.join(root, 'JPEGImages', 'a.jpg')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:-40])


def xml_edit(old, new):
    def edit(root):
        path = os.path.join(root, 'Annotations', 'a.xml')
        with open(path) as f:
            text = f.read()
        assert old in text
        write(path, text.replace(old, new))
    return edit


SIZE = '<size><width>64</width><height>48</height><depth>3</depth></size>'
BAD_CASES = {  # name: (spoil the good folder, file reported, words in the message)
    'missing image': (remove('JPEGImages', 'a.jpg'), 'a.jpg', 'missing'),
    'missing annotation': (remove('Annotations', 'a.xml'), 'a.xml', 'missing'),
    'missing split file': (remove('ImageSets', 'Main', 'val.txt'), 'val.txt', 'split file'),
    'empty split file': (lambda root: write(split_path(root, 'train'), '\n'), 'train.txt',
                         'lists no images'),
    'corrupt jpeg': (corrupt_jpeg, 'a.jpg', 'cannot be decoded'),
    'truncated jpeg': (truncate_jpeg, 'a.jpg', 'truncated'),
    'xml does not parse': (xml_edit('</annotation>', ''), 'a.xml', 'does not parse'),
    'missing size': (xml_edit(SIZE, ''), 'a.xml', '<size>'),
    'xmin >= xmax': (xml_edit('<xmax>31</xmax>', '<xmax>6</xmax>'), 'a.xml', 'empty'),
    'ymin >= ymax': (xml_edit('<ymax>41</ymax>', '<ymax>3</ymax>'), 'a.xml', 'empty'),
    'box outside': (xml_edit('<xmax>31</xmax>', '<xmax>67</xmax>'), 'a.xml', 'outside'),
    'negative box': (xml_edit('<xmin>6</xmin>', '<xmin>-2</xmin>'), 'a.xml', 'outside'),
    'missing difficult': (xml_edit('<difficult>0</difficult>', ''), 'a.xml', '<difficult>'),
    'missing name': (xml_edit('<name>cat</name>', ''), 'a.xml', '<name>'),
    'unknown class': (xml_edit('<name>cat</name>', '<name>cow</name>'), 'a.xml', "class 'cow'"),
    'size disagrees': (xml_edit('<width>64</width>', '<width>80</width>'), 'a.xml', '80x48'),
}


def test_clean_folder_has_no_problems(tmp_path):
    root = good_folder(tmp_path)
    assert check_voc_folder(root, ['train', 'val'], ['cat', 'dog']) == []
    assert main(['--root', root, '--classes', 'cat,dog']) == 0


@pytest.mark.parametrize('case', sorted(BAD_CASES))
def test_bad_input_is_reported_with_its_file(tmp_path, capsys, case):
    spoil, file_name, words = BAD_CASES[case]
    root = good_folder(tmp_path)
    spoil(root)
    (problem,) = check_voc_folder(root, ['train', 'val'], ['cat', 'dog'])
    assert os.path.basename(problem.path) == file_name and problem.severity == ERROR
    assert words in problem.message
    assert main(['--root', root, '--split', 'train', 'val', '--classes', 'cat,dog']) == 1
    assert f'{problem.path}: error: {problem.message}' in capsys.readouterr().out.splitlines()


def test_box_a_pixel_outside_is_tolerated(tmp_path):
    root = good_folder(tmp_path)
    xml_edit('<xmin>6</xmin>', '<xmin>0</xmin>')(root)  # xmin = -1 in 0-based pixels
    xml_edit('<xmax>31</xmax>', '<xmax>65</xmax>')(root)  # xmax = 64, the last pixel is 63
    assert check_voc_folder(root, ['train'], ['cat', 'dog']) == []


@pytest.mark.parametrize('box, words', [
    ((0, 0, 63, 47), None), ((-1, -1, 64, 48), None),  # the image; a pixel more on each side
    ((5, 5, 5, 9), 'empty'), ((5, 9, 8, 2), 'empty'),
    ((-1.5, 0, 9, 9), 'more than a pixel'), ((0, 0, 9, 48.5), 'more than a pixel'),
    ((63, 0, 64, 9), 'no area'), ((-1, 0, 0, 9), 'no area')])
def test_box_problem(box, words):
    problem = box_problem(box, 64, 48)
    assert problem is None if words is None else words in problem


def test_unknown_class_only_checked_when_classes_given(tmp_path):
    root = good_folder(tmp_path)
    assert check_voc_folder(root, ['train'], None) == []
    (problem,) = check_voc_folder(root, ['train'], ['CAT'])  # names compared as GluonCV does
    assert problem.path.endswith('b.xml') and "'dog'" in problem.message


def test_image_without_objects_is_a_warning(tmp_path, capsys):
    items = {'a': [], 'b': [('cat', (1, 1, 9, 9))]}
    root = write_voc_folder(tmp_path / 'voc', items, {'train': ['a', 'b']})
    (problem,) = check_voc_folder(root, ['train'])
    assert problem.severity == WARNING and problem.image_id == 'a'
    assert problem.path == os.path.join(root, 'Annotations', 'a.xml')
    assert main(['--root', root, '--split', 'train']) == 0
    assert 'a.xml: warning: no objects' in capsys.readouterr().out


def test_every_problem_is_listed_once(tmp_path):
    root = good_folder(tmp_path)
    write(split_path(root, 'val'), 'b\nc\n')
    corrupt_jpeg(root)
    write(os.path.join(root, 'Annotations', 'b.xml'), '<annotation>')
    problems = check_voc_folder(root, ['train', 'val'])  # b is in both splits
    assert [(os.path.basename(p.path), p.severity) for p in problems] == [
        ('a.jpg', ERROR), ('b.xml', ERROR), ('val.txt', WARNING)]
    assert [p.image_id for p in problems] == ['a', 'b', 'b']


def test_repeated_and_shared_ids_are_warnings(tmp_path):
    root = good_folder(tmp_path)
    write(split_path(root, 'train'), 'a\nb\na\n\na\n')
    write(split_path(root, 'val'), 'b\nc\nc\n')
    problems = check_voc_folder(root, ['train', 'val'], ['cat', 'dog'])
    assert [(os.path.basename(p.path), p.severity, p.image_id) for p in problems] == [
        ('train.txt', WARNING, 'a'), ('val.txt', WARNING, 'b'), ('val.txt', WARNING, 'c')]
    assert [p.message for p in problems] == [
        "'a' is listed 3 times", "'b' is also listed in train.txt: the splits overlap",
        "'c' is listed 2 times"]
    assert main(['--root', root]) == 0  # warnings alone


def tiny_image(root, side=(1, 1)):
    """Make image 'a' of the folder ``side`` pixels, without objects."""
    cv2.imwrite(os.path.join(root, 'JPEGImages', 'a.jpg'), np.full(side[::-1] + (3,), 90, np.uint8))
    write(os.path.join(root, 'Annotations', 'a.xml'), voc_xml(*side, []))


@pytest.mark.parametrize('side, error', [((1, 1), True), ((4, 60), True), ((60, 4), True),
                                         ((5, 5), False)])
def test_an_image_too_small_for_the_augmentation_is_an_error(tmp_path, side, error):
    root = good_folder(tmp_path)
    tiny_image(root, side)
    problems = check_voc_folder(root, ['train'], ['cat', 'dog'])
    image = os.path.join(root, 'JPEGImages', 'a.jpg')
    errors = [p for p in problems if p.severity == ERROR]
    assert [p.path for p in errors] == ([image] if error else [])
    if error:
        assert errors[0].message == (f'the image is {side[0]}x{side[1]}: the SSD augmentation '
                                     'needs at least 5x5 pixels')


def test_training_names_an_image_too_small_in_one_line(tmp_path, capsys):
    from gluon_ssdcl.commands.train import main as train_main
    root = good_folder(tmp_path)
    tiny_image(root)
    code = train_main(['--dataset', 'custom', '--dataset-root', root, '--augment', '--network',
                       'tiny', '--data-shape', '64', '--batch-size', '2', '-j', '0', '--epochs',
                       '1', '--save-prefix', str(tmp_path / 'run')])
    assert code == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
    assert line.startswith('error: ') and os.path.join(root, 'JPEGImages', 'a.jpg') in line


def test_command_line_module(tmp_path):
    root = good_folder(tmp_path)
    truncate_jpeg(root)
    result = run_check(tmp_path, '--root', root)
    assert result.returncode == 1, result.stderr
    image = os.path.join(root, 'JPEGImages', 'a.jpg')
    assert f'{image}: error: image cannot be decoded' in result.stdout
    assert 'RuntimeWarning' not in result.stderr


def test_check_image_leaves_pil_setting_as_it_was(tmp_path, monkeypatch):
    root = good_folder(tmp_path)
    truncate_jpeg(root)
    for setting in (True, False):
        monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', setting)
        size, problem = check_image(os.path.join(root, 'JPEGImages', 'a.jpg'))
        assert size is None and 'truncated' in problem
        assert ImageFile.LOAD_TRUNCATED_IMAGES is setting
        assert check_image(os.path.join(root, 'JPEGImages', 'b.jpg')) == ((64, 48), None)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is setting


def test_resolve_voc_root_accepts_the_folder_and_its_parent(tmp_path):
    voc = good_folder(tmp_path, os.path.join('generated', 'VOC2007'))
    assert resolve_voc_root(voc) == voc
    assert resolve_voc_root(str(tmp_path / 'generated')) == voc


def test_resolve_voc_root_says_which_folder_to_pass(tmp_path):
    with pytest.raises(ValueError, match='no such folder') as error:
        resolve_voc_root(str(tmp_path / 'missing'))
    assert str(tmp_path / 'missing') in str(error.value)
    (tmp_path / 'photos' / 'JPEGImages').mkdir(parents=True)
    with pytest.raises(ValueError) as error:
        resolve_voc_root(str(tmp_path / 'photos'))
    message = str(error.value)
    assert str(tmp_path / 'photos') in message and '\n' not in message
    assert all(word in message for word in ('JPEGImages/', 'ImageSets/Main/', 'VOC2007/'))


def test_command_line_accepts_the_generator_folder_and_its_voc2007(tmp_path, capsys):
    voc = good_folder(tmp_path, os.path.join('generated', 'VOC2007'))
    truncate_jpeg(voc)
    image = os.path.join(voc, 'JPEGImages', 'a.jpg')
    for root in (str(tmp_path / 'generated'), voc):
        assert main(['--root', root, '--classes', 'cat,dog']) == 1
        out = capsys.readouterr().out
        assert f'{image}: error: image cannot be decoded' in out
        assert out.splitlines()[-1] == f'1 error(s), 0 warning(s) in {voc}'


def test_command_line_bad_root_is_one_line(tmp_path):
    (tmp_path / 'photos').mkdir()
    for root in (tmp_path / 'missing', tmp_path / 'photos'):
        result = run_check(tmp_path, '--root', str(root))
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith('error: ') and str(root) in line
        assert 'split file' not in line and 'Traceback' not in result.stderr


@pytest.mark.parametrize('argv, flag', [([], '--root'), (['--root', '.', '--split'], '--split')])
def test_command_line_bad_flags_are_one_line(capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert flag in line and 'usage' not in line
