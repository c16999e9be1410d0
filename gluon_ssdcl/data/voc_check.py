"""Checks of Pascal VOC-layout folders: every problem that would break or silently spoil training.

A VOC-layout folder holds ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` and
``ImageSets/Main/<split>.txt`` (one image id a line). Usage::

    python -m gluon_ssdcl.data.check --root DIR [--split train val] [--classes cat,dog]

``DIR`` is that folder or its parent holding ``VOC2007/`` (the folder given to
``python -m gluon_ssdcl.data.digits --root``). Prints one line per problem,
``path: severity: message``, and exits with 1 when there are errors or ``DIR`` is neither.
"""
from __future__ import annotations

import contextlib
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFile

__all__ = ['ERROR', 'WARNING', 'SUBFOLDER', 'Problem', 'check_voc_folder', 'check_image',
           'resolve_voc_root', 'box_problem', 'clip_boxes', 'normalize_name', 'split_path',
           'image_path', 'annotation_path', 'read_split', 'MIN_AUGMENT_SIDE']

ERROR = 'error'
WARNING = 'warning'
SUBFOLDER = 'VOC2007'  # the VOC-layout folder under the digits generator's (and Pascal VOC's) root
# The smallest image side the SSD augmentation can crop: GluonCV's random crop (as
# gluon_ssdcl.data.augment draws it) keeps a side of at least scale / sqrt(aspect ratio) of the
# image, scale >= 0.3 and aspect ratio <= 2, which must be a pixel or more.
MIN_CROP_SCALE, MAX_CROP_ASPECT_RATIO = 0.3, 2
MIN_AUGMENT_SIDE = math.ceil(math.sqrt(MAX_CROP_ASPECT_RATIO) / MIN_CROP_SCALE)  # 5 pixels


class Problem(NamedTuple):
    """One problem found in a VOC-layout folder.

    Attributes
    ----------
    path : str
        The file at fault (or the file that is missing).
    message : str
        What is wrong, in words.
    severity : str
        ``ERROR``: the image cannot be trained on; ``WARNING``: valid but worth knowing.
    image_id : str or None
        The ImageSets entry concerned; None when the problem is not about one image
        (a missing split file).
    """
    path: str
    message: str
    severity: str = ERROR
    image_id: Optional[str] = None

    def __str__(self) -> str:
        return f'{self.path}: {self.severity}: {self.message}'


def split_path(root: str, split: str) -> str:
    """Path of the ImageSets file of `split`: ``root/ImageSets/Main/<split>.txt``."""
    return os.path.join(root, 'ImageSets', 'Main', f'{split}.txt')


def image_path(root: str, image_id: str) -> str:
    """Path of the image of `image_id`: ``root/JPEGImages/<image_id>.jpg``."""
    return os.path.join(root, 'JPEGImages', f'{image_id}.jpg')


def annotation_path(root: str, image_id: str) -> str:
    """Path of the annotation of `image_id`: ``root/Annotations/<image_id>.xml``."""
    return os.path.join(root, 'Annotations', f'{image_id}.xml')


def resolve_voc_root(root: str) -> str:
    """The VOC-layout folder of `root`: `root` itself, or ``root/VOC2007``.

    Parameters
    ----------
    root : str
        The folder holding ``JPEGImages/``, ``Annotations/`` and ``ImageSets/Main/``, or its
        parent holding ``VOC2007/`` (as written by
        :func:`~gluon_ssdcl.data.digitset.ensure_digits`); ``~`` is expanded.

    Returns
    -------
    str
        `root` when it holds ``ImageSets/Main/``, else ``root/VOC2007`` when that does.

    Raises
    ------
    ValueError
        When `root` is not a folder, or neither it nor ``root/VOC2007`` holds ``ImageSets/Main/``
        (one line saying which folder to pass).
    """
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
        raise ValueError(f'{root}: no such folder')
    for folder in (root, os.path.join(root, SUBFOLDER)):
        if os.path.isdir(os.path.join(folder, 'ImageSets', 'Main')):
            return folder
    raise ValueError(f'{root} is not a VOC-layout data set: pass the folder holding JPEGImages/, '
                     f'Annotations/ and ImageSets/Main/, or its parent holding {SUBFOLDER}/')


def read_split(root: str, split: str) -> List[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt``, in file order, blank lines skipped.

    Raises
    ------
    FileNotFoundError
        If the split file does not exist.
    """
    with open(split_path(root, split)) as f:
        return [line.strip() for line in f if line.strip()]


def normalize_name(name: str) -> str:
    """A class name as GluonCV's VOCDetection matches it (stripped, lower case)."""
    return name.strip().lower()


def box_problem(box: Sequence[float], width: float, height: float) -> Optional[str]:
    """What is wrong with a box, or None if it is usable.

    Parameters
    ----------
    box : sequence of 4 floats
        ``(xmin, ymin, xmax, ymax)`` in 0-based pixels, as VOCDetection loads them
        (the XML values minus 1).
    width, height : float
        Image size; its pixels are ``0 .. width - 1`` and ``0 .. height - 1``.

    Returns
    -------
    str or None
        None when ``xmin < xmax``, ``ymin < ymax``, the box reaches at most one pixel beyond
        the image and keeps some area inside it (:func:`clip_boxes` then fits it in).
    """
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    text = f'box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})'
    if not (xmin < xmax and ymin < ymax):
        return f'{text} is empty: needs xmin < xmax and ymin < ymax'
    if xmin < -1 or ymin < -1 or xmax > width or ymax > height:
        return f'{text} reaches more than a pixel outside the {width:g}x{height:g} image'
    if not (max(xmin, 0) < min(xmax, width - 1) and max(ymin, 0) < min(ymax, height - 1)):
        return f'{text} has no area inside the {width:g}x{height:g} image'
    return None


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip boxes ``(M, 4+)`` ``[xmin, ymin, xmax, ymax, ...]`` to the pixels of a
    width x height image (``0 .. width - 1``, ``0 .. height - 1``); returns a new array."""
    boxes = np.array(boxes, copy=True)
    boxes[:, (0, 2)] = boxes[:, (0, 2)].clip(0, width - 1)
    boxes[:, (1, 3)] = boxes[:, (1, 3)].clip(0, height - 1)
    return boxes


@contextlib.contextmanager
def _truncated_images_rejected() -> Iterator[None]:
    """PIL's check for truncated images switched on while the block runs (``import gluoncv.data``
    switches it off for the whole process); its previous setting is restored afterwards."""
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def check_image(path: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """Decode an image fully, truncated files included.

    PIL rather than OpenCV: OpenCV decodes a truncated JPEG without an error (grey fill).

    Parameters
    ----------
    path : str
        The image file.

    Returns
    -------
    ((width, height), None) or (None, str)
        The size in pixels of an image that decodes, else what failed.
    """
    try:
        with _truncated_images_rejected(), Image.open(path) as image:
            image.load()
            return image.size, None
    except (OSError, SyntaxError, ValueError) as e:
        return None, f'image cannot be decoded ({e})'


def _number(node: Optional[ET.Element], tag: str) -> Optional[float]:
    """The number in ``node/<tag>``, or None when it is missing or not a number."""
    child = None if node is None else node.find(tag)
    try:
        return float(child.text)
    except (AttributeError, TypeError, ValueError):
        return None


def _check_annotation(path: str, image_id: str, classes: Optional[Sequence[str]]
                      ) -> Tuple[Optional[Tuple[float, float]], List[Problem]]:
    """Problems of one annotation file that would crash GluonCV's VOCDetection or spoil labels.

    Returns the ``(width, height)`` of its ``<size>`` (None if unusable) and the problems.
    """
    def problem(message: str, severity: str = ERROR) -> Problem:
        return Problem(path, message, severity, image_id)

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        return None, [problem(f'annotation does not parse ({e})')]
    width, height = _number(root.find('size'), 'width'), _number(root.find('size'), 'height')
    if width is None or height is None or width < 1 or height < 1:
        return None, [problem('missing or invalid <size><width>/<height>')]
    problems = []
    objects = list(root.iter('object'))  # as VOCDetection reads them
    for k, obj in enumerate(objects):
        name_node, difficult_node = obj.find('name'), obj.find('difficult')
        if name_node is None or not (name_node.text or '').strip():
            problems.append(problem(f'object {k}: missing <name>'))
        elif classes is not None and normalize_name(name_node.text) not in classes:
            problems.append(problem(f'object {k}: unknown class {name_node.text.strip()!r}'))
        if difficult_node is None or difficult_node.text is None:
            problems.append(problem(f'object {k}: missing <difficult>'))
        box = [_number(obj.find('bndbox'), tag) for tag in ('xmin', 'ymin', 'xmax', 'ymax')]
        if None in box:
            problems.append(problem(f'object {k}: missing or invalid <bndbox> coordinates'))
            continue
        message = box_problem([v - 1 for v in box], width, height)
        if message:
            problems.append(problem(f'object {k}: {message}'))
    if not objects:
        problems.append(problem('no objects (all anchors will be background)', WARNING))
    return (width, height), problems


def _check_entry(root: str, image_id: str, classes: Optional[Sequence[str]]) -> List[Problem]:
    """Problems of one ImageSets entry: its image and its annotation."""
    img_file, xml_file = image_path(root, image_id), annotation_path(root, image_id)
    missing = [Problem(f, 'file listed in ImageSets is missing', ERROR, image_id)
               for f in (img_file, xml_file) if not os.path.isfile(f)]
    if missing:
        return missing
    image_size, image_error = check_image(img_file)
    xml_size, problems = _check_annotation(xml_file, image_id, classes)
    if image_size is not None and min(image_size) < MIN_AUGMENT_SIDE:
        image_error = (f'the image is {image_size[0]}x{image_size[1]}: the SSD augmentation '
                       f'needs at least {MIN_AUGMENT_SIDE}x{MIN_AUGMENT_SIDE} pixels')
    if image_error:
        problems.insert(0, Problem(img_file, image_error, ERROR, image_id))
    elif xml_size is not None and tuple(xml_size) != tuple(image_size):
        message = (f'<size> says {xml_size[0]:g}x{xml_size[1]:g} '
                   f'but the image is {image_size[0]}x{image_size[1]}')
        problems.append(Problem(xml_file, message, ERROR, image_id))
    return problems


def check_voc_folder(root: str, splits: Sequence[str] = ('train', 'val'),
                     classes: Optional[Sequence[str]] = None) -> List[Problem]:
    """List every problem of a VOC-layout folder.

    Parameters
    ----------
    root : str
        Folder holding ``JPEGImages/``, ``Annotations/`` and ``ImageSets/Main/``.
    splits : sequence of str
        Names of the ImageSets files to check (``train`` for ``ImageSets/Main/train.txt``).
    classes : sequence of str, optional
        Known class names; when given, an object of any other class is an error.

    Returns
    -------
    list of Problem
        In split and file order; an image listed in several splits is checked once.
        Errors: a missing split file or one that lists no images, a listed image or annotation
        that is missing, an image that does not decode (corrupt or truncated) or is smaller
        than :data:`MIN_AUGMENT_SIDE` pixels a side, an annotation that does not parse, lacks
        ``<size>``, ``<name>``, ``<difficult>`` or box coordinates, disagrees with the image
        size, has an empty box, a box more than a pixel outside the image or an unknown class.
        Warnings: an image without objects, an id listed more than once in a split (trained on
        or scored more than once an epoch) or in more than one split (validated on images
        trained on), given with the split file.
    """
    known = None if classes is None else {normalize_name(c) for c in classes}
    problems: List[Problem] = []
    listed_in = {}  # image id -> the first split that lists it
    for split in splits:
        try:
            ids = read_split(root, split)
        except OSError as e:
            message = f'split file cannot be read ({e.strerror})'
            problems.append(Problem(split_path(root, split), message))
            continue
        if not ids:
            problems.append(Problem(split_path(root, split), 'split file lists no images'))
        counts = Counter(ids)
        for image_id in counts:  # in file order
            if counts[image_id] > 1:
                problems.append(Problem(split_path(root, split),
                                        f'{image_id!r} is listed {counts[image_id]} times',
                                        WARNING, image_id))
            if image_id in listed_in:
                message = (f'{image_id!r} is also listed in '
                           f'{os.path.basename(split_path(root, listed_in[image_id]))}: the '
                           'splits overlap')
                problems.append(Problem(split_path(root, split), message, WARNING, image_id))
            else:
                listed_in[image_id] = split
                problems += _check_entry(root, image_id, known)
    return problems
