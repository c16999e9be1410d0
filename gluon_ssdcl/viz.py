"""Plots: embedding scatter (feature maps), detections on an image, training curves, animations.

Every plotting function takes ``ax=None`` and returns the :class:`matplotlib.figure.Figure`
it drew on. Without ``ax`` a new ``Figure`` is made directly (not through pyplot), so loops and
tests do not pile up open pyplot figures; save it with ``fig.savefig(path)``. Nothing here calls
``plt.show()`` or ``matplotlib.use()``.
"""
from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from gluoncv.utils.viz import plot_bbox
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from .evaluation.inference import collect_positives
from .utils.arrays import as_numpy
from .utils.files import atomic_path

__all__ = ['plot_embeddings', 'plot_detections', 'plot_history', 'save_history_plot',
           'save_animation', 'plot_feature_epoch', 'pca_2d', 'FeatureMapRecorder']

LOSS_KEYS = ('loss', 'cls', 'box', 'center')  # per-epoch loss terms of train.fit's history


def _axes(ax: Optional[Axes], figsize: Tuple[float, float]) -> Axes:
    """``ax``, or the single axes of a new (non-pyplot) Figure of ``figsize`` inches."""
    return ax if ax is not None else Figure(figsize=figsize).add_subplot()


def pca_2d(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The mean and the first two principal axes of ``points``, by SVD of the centred data.

    Each axis is signed so that its largest-magnitude coefficient is positive, which makes the
    projection deterministic (successive epochs do not flip at random).

    Parameters
    ----------
    points : numpy.ndarray, (M, D)
        D >= 2; M may be 0 (mean 0, axes along the first two coordinates).

    Returns
    -------
    mean : numpy.ndarray, (D,)
    axes : numpy.ndarray, (D, 2)
        Orthonormal columns; ``(x - mean) @ axes`` projects rows x onto the plane.
    """
    mean = points.mean(axis=0) if len(points) else np.zeros(points.shape[1])
    _, _, vt = np.linalg.svd(points - mean, full_matrices=True)
    axes = vt[:2].T
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    return mean, axes * np.where(signs == 0, 1, signs)


def _class_colours(num_classes: int):
    """Colour of each class id: tab10 up to 10 classes, tab20 (cycled) beyond."""
    cmap = colormaps['tab10' if num_classes <= 10 else 'tab20']
    return lambda class_id: cmap(class_id % cmap.N)


def _check_embeddings(emb: np.ndarray, labels: np.ndarray, centers: Optional[np.ndarray],
                      class_names: Optional[Sequence[str]]) -> None:
    """ValueError unless emb is (M, D >= 2), labels (M,) ids in range, centers (C, D)."""
    if emb.ndim != 2 or emb.shape[1] < 2:
        raise ValueError(f"emb must have shape (M, D) with D >= 2 (a 1-D embedding cannot be "
                         f"drawn in the plane), got {emb.shape}")
    if labels.shape != emb.shape[:1] or (len(labels)
                                         and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be ({len(emb)},) integers, got {labels.shape} "
                         f"{labels.dtype}")
    if centers is not None and (centers.ndim != 2 or centers.shape[1] != emb.shape[1]):
        raise ValueError(f"centers must have shape (C, {emb.shape[1]}), got {centers.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be class ids >= 0, got {labels.min()}")
    if class_names is not None and len(labels) and labels.max() >= len(class_names):
        raise ValueError(f"label {labels.max()} has no name among {len(class_names)} "
                         f"class_names")


def plot_embeddings(emb, labels, centers=None, class_names: Optional[Sequence[str]] = None,
                    ax: Optional[Axes] = None, title: Optional[str] = None) -> Figure:
    """Scatter of embeddings coloured by class, with the class centers marked.

    Embeddings of more than two dimensions are projected, together with the centers, on the
    first two principal axes of the embeddings (see :func:`pca_2d`; of the centers when there
    are no embeddings), and the title says so.

    Parameters
    ----------
    emb : numpy.ndarray or NDArray, (M, D)
        Embeddings, D >= 2; M may be 0 (an empty plot).
    labels : numpy.ndarray or NDArray of int, (M,)
        Class ids, 0-based (``cls_target - 1``). Class ``k`` always gets the same colour.
    centers : numpy.ndarray or NDArray, (C, D), optional
        Row ``k`` is the center of class ``k``: drawn as black-edged crosses.
    class_names : sequence of str, optional
        Legend names of the class ids (default: the ids).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new Figure by default.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    emb = as_numpy(emb).astype(np.float64)
    labels = as_numpy(labels)
    centers = None if centers is None else as_numpy(centers).astype(np.float64)
    _check_embeddings(emb, labels, centers, class_names)
    ax = _axes(ax, (6, 6))
    dim = emb.shape[1]
    if dim > 2:
        mean, axes = pca_2d(emb if len(emb) or centers is None else centers)
        emb = (emb - mean) @ axes
        centers = None if centers is None else (centers - mean) @ axes
        projection = f"PCA of {dim}-D embeddings"
        title = f"{title} ({projection})" if title else projection
    num_classes = max([len(class_names or ()), len(centers) if centers is not None else 0,
                       labels.max() + 1 if len(labels) else 0])
    colour = _class_colours(num_classes)
    for class_id in np.unique(labels):
        points = emb[labels == class_id]
        name = class_names[class_id] if class_names is not None else str(class_id)
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, color=colour(class_id),
                   label=name)
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], s=160, marker='X', edgecolors='black',
                   linewidths=1.5, color=[colour(k) for k in range(len(centers))],
                   label='centers')
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc='upper right', fontsize='small', markerscale=1.5)
    ax.set_aspect('equal', adjustable='datalim')
    ax.set_xlabel('PC 1' if dim > 2 else 'dim 1')
    ax.set_ylabel('PC 2' if dim > 2 else 'dim 2')
    if title:
        ax.set_title(title)
    return ax.figure


def plot_detections(img, bboxes, scores, ids, class_names: Sequence[str], thresh: float = 0.5,
                    ax: Optional[Axes] = None, colors: Optional[dict] = None) -> Figure:
    """An image with its detections drawn by GluonCV's :func:`~gluoncv.utils.viz.plot_bbox`.

    Parameters
    ----------
    img : numpy.ndarray or NDArray, (H, W, 3) uint8
        RGB image.
    bboxes : numpy.ndarray or NDArray, (K, 4)
        ``[xmin, ymin, xmax, ymax]`` in the pixels of ``img``.
    scores : numpy.ndarray or NDArray, (K,) or (K, 1)
    ids : numpy.ndarray or NDArray, (K,) or (K, 1)
        Class ids; -1 marks padding (not drawn).
    class_names : sequence of str
    thresh : float
        Detections scoring below this are not drawn.
    ax : matplotlib.axes.Axes, optional
    colors : dict, optional
        ``{class id: (r, g, b)}`` in 0..1 for some classes (the others: random colours).

    Returns
    -------
    matplotlib.figure.Figure
        One rectangle patch per detection with ``id >= 0`` and ``score >= thresh``.
    """
    bboxes = as_numpy(bboxes)
    if bboxes.ndim != 2 or bboxes.shape[1] != 4:
        raise ValueError(f"bboxes must have shape (K, 4), got {bboxes.shape}")
    height, width = img.shape[:2]
    ax = _axes(ax, (8, 8 * height / width))
    plot_bbox(img, bboxes, as_numpy(scores).reshape(-1), as_numpy(ids).reshape(-1), thresh=thresh,
              class_names=list(class_names), ax=ax, colors=dict(colors or {}))
    ax.set_axis_off()
    return ax.figure


def _read_history(history: Union[Sequence[dict], str, os.PathLike]) -> List[dict]:
    """The list of per-epoch dicts, read from JSON when ``history`` is a path."""
    if isinstance(history, (str, os.PathLike)):
        with open(history) as f:
            history = json.load(f)
    if not isinstance(history, list) or not all(isinstance(r, dict) and 'epoch' in r
                                                for r in history):
        raise ValueError("history must be a list of per-epoch dicts with an 'epoch' key, "
                         "as in train.fit(...)['history']")
    return history


def plot_history(history: Union[Sequence[dict], str, os.PathLike],
                 ax: Optional[Axes] = None, lr_ax: Optional[Axes] = None) -> Figure:
    """Training curves: the loss terms per epoch, the validation mAP on a second y-axis and,
    on ``lr_ax``, the learning rate.

    Parameters
    ----------
    history : list of dict, or path to a JSON file holding one
        ``train.fit(...)['history']``: dicts with ``'epoch'``, the losses ``'loss'``,
        ``'cls'``, ``'box'``, ``'center'`` and, in validated epochs, ``'map'``. Each curve has
        the epochs whose dict holds its key.
    ax : matplotlib.axes.Axes, optional
        Axes of the losses; the mAP goes on ``ax.twinx()``.
    lr_ax : matplotlib.axes.Axes, optional
        Axes of the learning rate (each dict's ``'lr'``, at the end of its epoch); without
        them it is not drawn.

    Returns
    -------
    matplotlib.figure.Figure
        One line per loss key present, plus a ``'mAP'`` line when any epoch has one.
    """
    records = _read_history(history)
    ax = _axes(ax, (8, 5))
    for key in LOSS_KEYS:
        points = [(r['epoch'], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), marker='o', markersize=3, label=key)
    ax.set_xlabel('epoch')
    ax.set_ylabel('loss (per positive anchor)')
    handles, names = ax.get_legend_handles_labels()
    maps = [(r['epoch'], r['map']) for r in records if 'map' in r]
    if maps:
        map_ax = ax.twinx()
        handles += map_ax.plot(*zip(*maps), color='black', linestyle='--', marker='s',
                               markersize=4, label='mAP')
        names.append('mAP')
        map_ax.set_ylabel('VOC07 mAP')
        map_ax.set_ylim(bottom=0)
    if handles:
        ax.legend(handles, names, loc='best', fontsize='small')
    if lr_ax is not None:
        rates = [(r['epoch'], r['lr']) for r in records if 'lr' in r]
        if rates:
            lr_ax.plot(*zip(*rates), marker='o', markersize=3, color='tab:purple')
        lr_ax.set_xlabel('epoch')
        lr_ax.set_ylabel('learning rate')
    return ax.figure


def save_history_plot(history: Union[Sequence[dict], str, os.PathLike], path: str) -> str:
    """Save :func:`plot_history`'s curves, the learning rate below them, as a PNG at ``path``
    (written to a temporary file and renamed); returns ``path``."""
    fig = Figure(figsize=(8, 7))
    loss_ax, lr_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': (3, 1)})
    plot_history(history, ax=loss_ax, lr_ax=lr_ax)
    loss_ax.set_xlabel('')
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=80)
    return path


def _padded_frames(png_paths: Sequence[str]) -> List[Image.Image]:
    """The images as RGB, each pasted at the top left of a white canvas of the largest size."""
    frames = []
    for path in png_paths:
        with Image.open(path) as image:
            frames.append(image.convert('RGB'))
    size = (max(f.width for f in frames), max(f.height for f in frames))
    canvases = []
    for frame in frames:
        canvas = Image.new('RGB', size, 'white')
        canvas.paste(frame)
        canvases.append(canvas)
    return canvases


def save_animation(png_paths: Sequence[str], gif_path: str, duration_ms: int = 500) -> str:
    """Write an endlessly looping animated GIF of the images, in order, with Pillow.

    Images of different sizes are padded with white to the largest. The GIF is written to a
    temporary file and renamed, so ``gif_path`` is never half written. Pillow merges
    consecutive identical frames into one longer frame.

    Parameters
    ----------
    png_paths : sequence of str
        Image files (PNG, or anything Pillow reads), at least one.
    gif_path : str
    duration_ms : int
        Display time of each frame, in milliseconds (> 0).

    Returns
    -------
    str
        ``gif_path``.
    """
    if not png_paths:
        raise ValueError("save_animation needs at least one image, got an empty list")
    if duration_ms <= 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    first, *rest = _padded_frames(png_paths)
    with atomic_path(gif_path) as tmp:
        first.save(tmp, format='GIF', save_all=True, append_images=rest, duration=duration_ms,
                   loop=0)
    return gif_path


def plot_feature_epoch(net, loader, ctx, centers, class_names: Sequence[str],
                       max_batches: Optional[int] = None, title: Optional[str] = None,
                       ax: Optional[Axes] = None) -> Figure:
    """The embeddings of the positive anchors of ``loader``, plotted with the centers.

    Runs :func:`gluon_ssdcl.evaluation.inference.collect_positives` and :func:`plot_embeddings`.

    Parameters
    ----------
    net : SSDCenter
    loader : iterable
        Batches ``(img (B, 3, H, W), cls_targets (B, N), box_targets (B, N, 4))``, e.g. from
        :func:`gluon_ssdcl.evaluation.inference.positive_loader`.
    ctx : list of mx.Context
    centers : numpy.ndarray or NDArray, (C, D), optional
        E.g. ``center_loss.centers.weight.data()``.
    class_names : sequence of str
    max_batches : int, optional
        Use only the first batches (all by default).
    title : str, optional
        E.g. ``'epoch 3'``.
    ax : matplotlib.axes.Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    embeddings, labels, _ = collect_positives(net, loader, ctx, max_batches)
    return plot_embeddings(embeddings, labels, centers, class_names, ax=ax, title=title)


class FeatureMapRecorder:
    """Saves the feature map of fixed samples after each validation, then animates them.

    Parameters
    ----------
    loaders : dict of str to iterable
        Split name (``'train'``, ``'val'``) to a fixed loader of training targets, e.g.
        :func:`gluon_ssdcl.evaluation.inference.positive_loader` over the first images of the split.
    class_names : sequence of str
    prefix : str
        Files are ``<prefix>_features_<split>_epoch<N>.png`` and ``<prefix>_features_<split>.gif``.
    ctx : list of mx.Context
    """

    def __init__(self, loaders, class_names: Sequence[str], prefix: str, ctx):
        self.loaders, self.class_names, self.prefix, self.ctx = loaders, class_names, prefix, ctx
        self.frames = {split: {} for split in loaders}

    def record(self, net, centers, epoch: int) -> List[str]:
        """Plot and save each split's embeddings (and ``centers`` (C, D)) after ``epoch``."""
        paths = []
        for split, loader in self.loaders.items():
            fig = plot_feature_epoch(net, loader, self.ctx, centers, self.class_names,
                                     title=f'{split}, epoch {epoch}')
            path = f'{self.prefix}_features_{split}_epoch{epoch}.png'
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format='png', dpi=80)
            self.frames[split][epoch] = path
            paths.append(path)
        return paths

    def animate(self, duration_ms: int = 700) -> List[str]:
        """One GIF per split of the frames recorded so far, in epoch order."""
        return [save_animation([frames[e] for e in sorted(frames)],
                               f'{self.prefix}_features_{split}.gif', duration_ms)
                for split, frames in self.frames.items() if frames]
