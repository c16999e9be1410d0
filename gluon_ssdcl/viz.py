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

__all__ = ['plot_embeddings', 'plot_embedding_grid', 'plot_detections', 'plot_history',
           'save_history_plot', 'save_animation', 'plot_feature_epoch', 'pca_2d',
           'FeatureMapRecorder']

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


# maps of plot_embeddings to the plane for D > 2: (name in titles, name of the axes)
EMBEDDING_METHODS = {'pca': ('PCA', 'PC'), 'tsne': ('t-SNE', 't-SNE')}


def _check_plot_options(method: str, max_points: Optional[int]) -> None:
    """ValueError unless ``method`` is one of EMBEDDING_METHODS and ``max_points`` is None or a
    positive int."""
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, EMBEDDING_METHODS))}, "
                         f"got {method!r}")
    if max_points is not None and (isinstance(max_points, bool)
                                   or not isinstance(max_points, (int, np.integer))
                                   or max_points <= 0):
        raise ValueError(f"max_points must be a positive int or None, got {max_points!r}")


def _means_of_classes(emb: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The ids of the classes present, (K,), and their mean embeddings, (K, D)."""
    ids, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(ids), emb.shape[1]))
    np.add.at(sums, index, emb)
    return ids, sums / counts[:, None]


def _tsne_2d(points: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) t-SNE map of ``points`` (N, D), perplexity ``min(30, (N - 1) / 3)``; a single
    point goes to the origin."""
    if len(points) < 2:
        return np.zeros((len(points), 2))
    # imported here: scikit-learn takes a while to import and only t-SNE needs it
    from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
    return TSNE(n_components=2, init='pca', random_state=seed,
                perplexity=min(30.0, (len(points) - 1) / 3)).fit_transform(points)


def _to_plane(method: str, emb: np.ndarray, centers: Optional[np.ndarray],
              means: Optional[np.ndarray], seed: int) -> Tuple[Optional[np.ndarray], ...]:
    """``emb`` (M, D), ``centers`` (C, D) and ``means`` (K, D) (either may be None) mapped to
    (M, 2), (C, 2) and (K, 2) by ``method``, as :func:`plot_embeddings` describes."""
    parts = [x for x in (emb, centers, means) if x is not None]
    if method == 'pca':
        mean, axes = pca_2d(emb if len(emb) or centers is None else centers)
        mapped = iter([(x - mean) @ axes for x in parts])
    else:
        mapped = iter(np.split(_tsne_2d(np.concatenate(parts), seed),
                               np.cumsum([len(x) for x in parts])[:-1]))
    return tuple(None if x is None else next(mapped) for x in (emb, centers, means))


def plot_embeddings(emb, labels, centers=None, class_names: Optional[Sequence[str]] = None,
                    ax: Optional[Axes] = None, title: Optional[str] = None, method: str = 'pca',
                    class_means: bool = True, max_points: Optional[int] = None,
                    seed: int = 0) -> Figure:
    """Scatter of embeddings coloured by class, with the class centers and means marked.

    Embeddings of D == 2 are drawn as they are. Of D > 2 they are mapped to the plane by
    ``method``, and the title and axis labels say which:

    - ``'pca'``: projected, with the centers and class means, on the first two principal axes
      of the drawn embeddings (see :func:`pca_2d`; of the centers when there are none).
    - ``'tsne'``: scikit-learn's t-SNE (``init='pca'``, ``random_state=seed``, perplexity
      ``min(30, (N - 1) / 3)`` of its N input points, so that tiny inputs work). t-SNE maps
      only the points it is fitted on, so it is fitted on the drawn embeddings, the centers and
      the class means stacked together, and its map is split back. It keeps neighbourhoods,
      not distances, and takes seconds per thousand points: bound it with ``max_points``.

    Parameters
    ----------
    emb : numpy.ndarray or NDArray, (M, D)
        Embeddings, D >= 2; M may be 0 (an empty plot).
    labels : numpy.ndarray or NDArray of int, (M,)
        Class ids, 0-based (``cls_target - 1``). Class ``k`` always gets the same colour.
    centers : numpy.ndarray or NDArray, (C, D), optional
        Row ``k`` is the center of class ``k``: drawn as black-edged crosses (``'centers'``).
    class_names : sequence of str, optional
        Legend names of the class ids (default: the ids).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new Figure by default.
    title : str, optional
    method : {'pca', 'tsne'}
        The map to the plane when D > 2.
    class_means : bool
        Also draw the mean embedding of each class present, over all M embeddings in D
        dimensions, mapped like the points: black-edged diamonds (``'class means'``).
    max_points : int, optional
        When M is larger, draw (and fit the map on) a random subset of this many embeddings,
        the same for the same ``seed``; the title says how many of how many.
    seed : int
        Seed of the subset (``numpy.random.default_rng``) and of t-SNE.

    Returns
    -------
    matplotlib.figure.Figure
    """
    emb = as_numpy(emb).astype(np.float64)
    labels = as_numpy(labels)
    centers = None if centers is None else as_numpy(centers).astype(np.float64)
    _check_embeddings(emb, labels, centers, class_names)
    _check_plot_options(method, max_points)
    ax = _axes(ax, (6, 6))
    dim, total = emb.shape[1], len(emb)
    num_classes = max([len(class_names or ()), len(centers) if centers is not None else 0,
                       labels.max() + 1 if len(labels) else 0])
    mean_ids, means = _means_of_classes(emb, labels) if class_means else (None, None)
    notes = []
    if max_points is not None and total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(total, max_points, replace=False))
        emb, labels = emb[keep], labels[keep]
        notes.append(f"{max_points} of {total} points")
    if dim > 2:
        emb, centers, means = _to_plane(method, emb, centers, means, seed)
        notes.insert(0, f"{EMBEDDING_METHODS[method][0]} of {dim}-D embeddings")
    if notes:
        title = f"{title}\n({', '.join(notes)})" if title else ', '.join(notes)
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
    if class_means and len(means):
        ax.scatter(means[:, 0], means[:, 1], s=90, marker='D', edgecolors='black',
                   linewidths=1.5, color=[colour(k) for k in mean_ids], label='class means')
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc='upper right', fontsize='small', markerscale=1.5)
    ax.set_aspect('equal', adjustable='datalim')
    axis_name = EMBEDDING_METHODS[method][1] if dim > 2 else 'dim'
    ax.set_xlabel(f'{axis_name} 1')
    ax.set_ylabel(f'{axis_name} 2')
    if title:
        ax.set_title(title)
    return ax.figure


def plot_embedding_grid(runs, class_names: Optional[Sequence[str]] = None,
                        methods: Sequence[str] = ('tsne', 'pca'), max_points: Optional[int] = 3000,
                        seed: int = 0) -> Figure:
    """The embeddings of several runs side by side: one column per run, one row per method.

    Each cell is :func:`plot_embeddings` of one run with one method, titled with the run's
    name (and the method), on a new Figure.

    Parameters
    ----------
    runs : dict of str to tuple
        Column title to ``(emb (M, D), labels (M,), centers (C, D) or None)``, in column order,
        e.g. ``{'softmax': (...), 'softmax + center': (...)}``.
    class_names : sequence of str, optional
    methods : sequence of {'pca', 'tsne'}
        One row each, top to bottom.
    max_points : int, optional
        Points drawn per cell at most (t-SNE is slow on thousands of points).
    seed : int

    Returns
    -------
    matplotlib.figure.Figure
        ``len(methods) * len(runs)`` axes, row by row.
    """
    if not runs or not methods:
        raise ValueError(f"plot_embedding_grid needs at least one run and one method, got "
                         f"{len(runs)} runs and methods {tuple(methods)}")
    for method in methods:
        _check_plot_options(method, max_points)
    fig = Figure(figsize=(5.5 * len(runs), 5.5 * len(methods)), layout='constrained')
    grid = fig.subplots(len(methods), len(runs), squeeze=False)
    for row, method in zip(grid, methods):
        for ax, (name, (emb, labels, centers)) in zip(row, runs.items()):
            plot_embeddings(emb, labels, centers, class_names, ax=ax, title=name, method=method,
                            max_points=max_points, seed=seed)
    return fig


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
    return _save_png(fig, path)


def _save_png(fig: Figure, path: str) -> str:
    """Save ``fig`` as a PNG at ``path`` (written to a temporary file and renamed); returns
    ``path``."""
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

    The frames are PCA maps (:func:`plot_embeddings`), so that successive epochs compare; at the
    end :meth:`save_tsne` adds a t-SNE map of one split's last recorded epoch.

    Parameters
    ----------
    loaders : dict of str to iterable
        Split name (``'train'``, ``'val'``) to a fixed loader of training targets, e.g.
        :func:`gluon_ssdcl.evaluation.inference.positive_loader` over the first images of the split.
    class_names : sequence of str
    prefix : str
        Files are ``<prefix>_features_<split>_epoch<N>.png``, ``<prefix>_features_<split>.gif``
        and ``<prefix>_features_<split>_tsne.png``.
    ctx : list of mx.Context
    """

    def __init__(self, loaders, class_names: Sequence[str], prefix: str, ctx):
        self.loaders, self.class_names, self.prefix, self.ctx = loaders, class_names, prefix, ctx
        self.frames = {split: {} for split in loaders}
        self.last = {}  # split: (epoch, embeddings (M, D), labels (M,), centers (C, D))

    def record(self, net, centers, epoch: int) -> List[str]:
        """Plot and save each split's embeddings (and ``centers`` (C, D)) after ``epoch``."""
        # a copy: training goes on updating the centers' parameter
        centers = None if centers is None else np.array(as_numpy(centers))
        paths = []
        for split, loader in self.loaders.items():
            embeddings, labels, _ = collect_positives(net, loader, self.ctx)
            fig = plot_embeddings(embeddings, labels, centers, self.class_names,
                                  title=f'{split}, epoch {epoch}')
            path = _save_png(fig, f'{self.prefix}_features_{split}_epoch{epoch}.png')
            self.frames[split][epoch] = path
            self.last[split] = (epoch, embeddings, labels, centers)
            paths.append(path)
        return paths

    def animate(self, duration_ms: int = 700) -> List[str]:
        """One GIF per split of the frames recorded so far, in epoch order."""
        return [save_animation([frames[e] for e in sorted(frames)],
                               f'{self.prefix}_features_{split}.gif', duration_ms)
                for split, frames in self.frames.items() if frames]

    def save_tsne(self, split: str = 'val', max_points: int = 3000) -> str:
        """Save the t-SNE map of ``split``'s embeddings at the last recorded epoch, with the
        centers and class means, as ``<prefix>_features_<split>_tsne.png``; returns its path.

        At most ``max_points`` embeddings are drawn (t-SNE takes seconds per thousand).
        """
        if split not in self.last:
            raise ValueError(f"no epoch of split {split!r} recorded yet (recorded: "
                             f"{', '.join(self.last) or 'none'})")
        epoch, embeddings, labels, centers = self.last[split]
        fig = plot_embeddings(embeddings, labels, centers, self.class_names,
                              title=f'{split}, epoch {epoch}', method='tsne',
                              max_points=max_points)
        return _save_png(fig, f'{self.prefix}_features_{split}_tsne.png')
