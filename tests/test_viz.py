"""Tests of gluon_ssdcl.viz: embedding scatter, detections, training curves, GIF animation."""
import json
import os

import matplotlib
import mxnet as mx
import numpy as np
import pytest
from matplotlib import pyplot as plt
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from test_evaluate import image_dataset
from threadpoolctl import threadpool_limits

from gluon_ssdcl.evaluation.inference import collect_positives, positive_loader
from gluon_ssdcl.viz import (FeatureMapRecorder, pca_2d, plot_detections, plot_embedding_grid,
                             plot_embeddings, plot_feature_epoch, plot_history, save_animation)

CLASSES = ['a', 'b', 'c']


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """Every test must leave pyplot without open figures (the library builds bare Figures)."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


@pytest.fixture
def one_thread():
    """t-SNE on one OpenMP thread: on a busy machine its threads wait for each other much
    longer than these tiny fits take."""
    with threadpool_limits(1, user_api='openmp'):
        yield


def scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def num_points(ax):
    return sum(len(c.get_offsets()) for c in scatters(ax))


def offsets(ax):
    """Legend label to the (n, 2) drawn points of each scatter of ``ax``."""
    return {c.get_label(): np.asarray(c.get_offsets()) for c in scatters(ax)}


def clusters(dim, per_class=10, seed=0):
    """(30, dim) embeddings around three centers, their labels and the (3, dim) centers."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, (3, dim))
    labels = np.repeat(np.arange(3), per_class)
    return centers[labels] + rng.normal(0, 1, (len(labels), dim)), labels, centers


def test_plot_embeddings_2d_points_colours_and_legend():
    emb, labels, centers = clusters(2)
    fig = plot_embeddings(emb, labels, centers, CLASSES, title='epoch 0')
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert num_points(ax) == 30 + 3 + 3 and ax.get_title() == 'epoch 0'
    by_label = offsets(ax)
    np.testing.assert_allclose(by_label['b'], emb[labels == 1])
    np.testing.assert_allclose(by_label['centers'], centers)
    np.testing.assert_allclose(by_label['class means'],
                               [emb[labels == k].mean(axis=0) for k in range(3)])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == CLASSES + ['centers',
                                                                              'class means']
    # t-SNE of 2-D embeddings draws them as they are
    ax = plot_embeddings(emb, labels, centers, CLASSES, method='tsne', class_means=False).axes[0]
    assert list(offsets(ax)) == CLASSES + ['centers'] and ax.get_xlabel() == 'dim 1'
    np.testing.assert_allclose(offsets(ax)['b'], emb[labels == 1])
    # class b keeps its tab10 colour when class a is absent
    tab10 = matplotlib.colormaps['tab10']
    fig = plot_embeddings(mx.nd.array(emb[labels > 0]), mx.nd.array(labels[labels > 0],
                                                                    dtype='int64'),
                          class_names=CLASSES)
    colours = {c.get_label(): c.get_facecolor()[0] for c in scatters(fig.axes[0])}
    np.testing.assert_allclose(colours['b'][:3], tab10(1)[:3])
    np.testing.assert_allclose(colours['c'][:3], tab10(2)[:3])


def test_plot_embeddings_projects_points_and_centers_with_pca():
    emb, labels, centers = clusters(6)
    ax = plot_embeddings(emb, labels, centers, CLASSES).axes[0]
    assert 'PCA of 6-D embeddings' in ax.get_title()
    # independent reference: the top eigenvectors of the covariance matrix
    mean = emb.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(emb, rowvar=False))
    reference = vectors[:, ::-1][:, :2]
    by_label = {c.get_label(): np.asarray(c.get_offsets()) for c in scatters(ax)}
    for name, points in (('a', emb[labels == 0]), ('centers', centers)):
        expected = (points - mean) @ reference
        got = by_label[name]
        signs = np.sign(np.sum(got * expected, axis=0))
        np.testing.assert_allclose(got, expected * signs, atol=1e-6)
    # the plotted 2-D points keep the variance of the top two principal axes
    plotted = np.concatenate([by_label[n] for n in CLASSES])
    top2 = np.sort(np.linalg.eigvalsh(np.cov(emb, rowvar=False)))[-2:].sum()
    np.testing.assert_allclose(np.cov(plotted, rowvar=False).trace(), top2)


def embeddings16(num=40):
    """``num`` 16-D embeddings of classes a and b (class c has a center but no points), their
    labels and the (3, 16) centers."""
    emb, labels, centers = clusters(16, per_class=num)
    keep = np.concatenate([np.flatnonzero(labels == k)[:num // 2] for k in (0, 1)])
    return emb[keep], labels[keep], centers


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('method, name, axis', [('pca', 'PCA', 'PC'), ('tsne', 't-SNE', 't-SNE')])
def test_pca_and_tsne_draw_every_point_the_centers_and_the_class_means(method, name, axis):
    emb, labels, centers = embeddings16()
    ax = plot_embeddings(emb, labels, centers, CLASSES, method=method).axes[0]
    drawn = offsets(ax)
    assert {k: len(v) for k, v in drawn.items()} == {'a': 20, 'b': 20, 'centers': 3,
                                                     'class means': 2}
    assert all(np.isfinite(v).all() for v in drawn.values())
    assert ax.get_title() == f'{name} of 16-D embeddings'
    assert (ax.get_xlabel(), ax.get_ylabel()) == (f'{axis} 1', f'{axis} 2')
    ax = plot_embeddings(emb, labels, centers, CLASSES, title='val', method=method,
                         max_points=25).axes[0]
    drawn = offsets(ax)
    assert len(drawn.get('a', ())) + len(drawn.get('b', ())) == 25
    assert len(drawn['centers']) == 3 and len(drawn['class means']) == 2
    assert ax.get_title() == f'val\n({name} of 16-D embeddings, 25 of 40 points)'
    # max_points at or above M draws everything
    ax = plot_embeddings(emb, labels, method=method, max_points=40).axes[0]
    assert num_points(ax) == 40 + 2 and 'of 40 points' not in ax.get_title()


@pytest.mark.usefixtures('one_thread')
def test_tsne_of_tiny_inputs():
    emb, labels, _ = embeddings16()
    ax = plot_embeddings(emb[:2], labels[:2], method='tsne').axes[0]  # 3 points: perplexity 2/3
    assert {k: len(v) for k, v in offsets(ax).items()} == {'0': 2, 'class means': 1}


def test_pca_draws_the_class_means_projected_like_the_points():
    emb, labels, centers = embeddings16()
    means = np.stack([emb[labels == k].mean(axis=0) for k in (0, 1)])
    for max_points in (None, 25):
        ax = plot_embeddings(emb, labels, centers, CLASSES, max_points=max_points).axes[0]
        drawn = emb if max_points is None else emb[np.sort(
            np.random.default_rng(0).choice(len(emb), max_points, replace=False))]
        mean, axes = pca_2d(drawn)
        np.testing.assert_allclose(offsets(ax)['class means'], (means - mean) @ axes,
                                   atol=1e-9)
        np.testing.assert_allclose(offsets(ax)['centers'], (centers - mean) @ axes, atol=1e-9)
    # the projection of the subset is not the one of all the points
    assert not np.allclose(pca_2d(drawn)[1], pca_2d(emb)[1])


@pytest.mark.usefixtures('one_thread')
def test_tsne_is_deterministic_for_a_seed():
    emb, labels, centers = embeddings16()
    first, second = (offsets(plot_embeddings(emb, labels, centers, method='tsne', max_points=30,
                                             seed=3).axes[0]) for _ in range(2))
    assert list(first) == ['0', '1', 'centers', 'class means'] and list(second) == list(first)
    for key, points in first.items():
        np.testing.assert_array_equal(second[key], points, err_msg=key)


def test_plot_embeddings_bad_method_and_max_points():
    emb, labels, _ = embeddings16()
    with pytest.raises(ValueError, match="method.*'pca', 'tsne'.*'umap'"):
        plot_embeddings(emb, labels, method='umap')
    for bad in (0, -3, 2.5, True, '10'):
        with pytest.raises(ValueError, match='max_points'):
            plot_embeddings(emb, labels, max_points=bad)
    with pytest.raises(ValueError, match="'umap'"):
        plot_embedding_grid({'run': (emb, labels, None)}, methods=('pca', 'umap'))
    with pytest.raises(ValueError, match='at least one run'):
        plot_embedding_grid({})


@pytest.mark.usefixtures('one_thread')
def test_plot_embedding_grid_has_a_column_per_run_and_a_row_per_method():
    emb, labels, centers = embeddings16(num=20)
    runs = {'softmax': (emb, labels, None), 'softmax + center': (emb * 2, labels, centers)}
    fig = plot_embedding_grid(runs, CLASSES, max_points=15)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f'{run}\n({name} of 16-D embeddings, 15 of 20 points)'
                      for name in ('t-SNE', 'PCA') for run in runs]
    assert [num_points(ax) for ax in fig.axes] == [15 + 2, 15 + 3 + 2] * 2


def test_pca_2d_is_orthonormal_and_deterministic():
    emb, _, _ = clusters(5)
    mean, axes = pca_2d(emb)
    np.testing.assert_allclose(axes.T @ axes, np.eye(2), atol=1e-12)
    assert np.all(axes[np.abs(axes).argmax(axis=0), [0, 1]] > 0)
    np.testing.assert_allclose(pca_2d(emb[::-1])[1], axes)
    np.testing.assert_allclose(mean, emb.mean(axis=0))


def test_plot_embeddings_bad_and_empty_inputs():
    with pytest.raises(ValueError, match='1-D'):
        plot_embeddings(np.zeros((4, 1)), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match='labels'):
        plot_embeddings(np.zeros((4, 2)), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match='no name'):
        plot_embeddings(np.zeros((1, 2)), np.array([3]), class_names=CLASSES)
    with pytest.raises(ValueError, match='centers'):
        plot_embeddings(np.zeros((1, 2)), np.array([0]), centers=np.zeros((3, 4)))
    assert num_points(plot_embeddings(np.zeros((0, 2)), np.zeros(0, np.int64)).axes[0]) == 0
    _, _, centers = clusters(8)
    fig = plot_embeddings(np.zeros((0, 8)), np.zeros(0, np.int64), centers, CLASSES)
    assert num_points(fig.axes[0]) == 3


def test_plots_draw_on_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    emb, labels, _ = clusters(2)
    assert plot_embeddings(emb, labels, ax=ax) is fig
    assert plot_history([{'epoch': 0, 'loss': 1.0, 'map': 0.1}], ax=fig.add_subplot(2, 1, 2)) \
        is fig
    assert len(fig.axes) == 3  # the twin axis of the mAP


def test_plot_detections_draws_one_rectangle_per_kept_detection():
    img = np.full((48, 64, 3), 128, np.uint8)
    bboxes = np.array([[2, 3, 20, 30], [10, 10, 40, 40], [5, 5, 9, 9], [30, 1, 60, 44]], float)
    scores = np.array([0.9, 0.3, 0.7, 0.8])
    ids = np.array([0, 1, -1, 2])
    ax = plot_detections(img, bboxes, scores, ids, CLASSES).axes[0]
    rectangles = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert sorted(r.get_xy() for r in rectangles) == [(2, 3), (30, 1)]
    assert sorted(t.get_text() for t in ax.texts) == ['a 0.900', 'c 0.800']
    ax = plot_detections(mx.nd.array(img, dtype='uint8'), mx.nd.array(bboxes),
                         mx.nd.array(scores[:, None]), mx.nd.array(ids[:, None]), CLASSES,
                         thresh=0.25).axes[0]
    assert len(ax.patches) == 3
    with pytest.raises(ValueError, match=r'\(K, 4\)'):
        plot_detections(img, bboxes[:, :3], scores, ids, CLASSES)


HISTORY = [{'epoch': 0, 'loss': 3.0, 'cls': 2.0, 'box': 0.5, 'center': 0.5, 'speed': 10.0,
            'lr': 0.01},
           {'epoch': 1, 'loss': 2.0, 'cls': 1.5, 'box': 0.3, 'center': 0.2, 'speed': 10.0,
            'lr': 0.01, 'map': 0.25},
           {'epoch': 2, 'loss': 1.5, 'cls': 1.0, 'box': 0.3, 'center': 0.2, 'speed': 10.0,
            'lr': 0.01, 'map': 0.4}]


def test_plot_history_has_a_line_per_loss_and_the_map(tmp_path):
    path = tmp_path / 'history.json'
    path.write_text(json.dumps(HISTORY))
    for history in (HISTORY, str(path)):
        fig = plot_history(history)
        loss_ax, map_ax = fig.axes
        lines = {line.get_label(): line for line in loss_ax.get_lines()}
        assert list(lines) == ['loss', 'cls', 'box', 'center']
        np.testing.assert_allclose(lines['cls'].get_ydata(), [2.0, 1.5, 1.0])
        (map_line,) = map_ax.get_lines()
        assert list(map_line.get_xdata()) == [1, 2]
        np.testing.assert_allclose(map_line.get_ydata(), [0.25, 0.4])
        assert [t.get_text() for t in loss_ax.get_legend().get_texts()][-1] == 'mAP'
    assert len(plot_history([dict(r) for r in HISTORY[:1]]).axes) == 1  # no mAP, no twin
    with pytest.raises(ValueError, match='epoch'):
        plot_history([{'loss': 1.0}])


def test_save_animation_writes_a_gif_with_one_frame_per_image(tmp_path):
    paths = []
    for i, size in enumerate([(40, 30), (40, 30), (50, 20)]):
        path = str(tmp_path / f'frame{i}.png')
        Image.new('RGB', size, (80 * i, 255 - 80 * i, 0)).save(path)
        paths.append(path)
    gif = str(tmp_path / 'out' / 'anim.gif')
    assert save_animation(paths, gif, duration_ms=200) == gif
    with Image.open(gif) as image:
        assert image.format == 'GIF' and image.n_frames == 3 and image.size == (50, 30)
        assert image.info['duration'] == 200
    assert os.listdir(tmp_path / 'out') == ['anim.gif']
    with pytest.raises(ValueError, match='empty'):
        save_animation([], gif)


def test_plot_feature_epoch_plots_the_positive_embeddings(tiny_net):
    loader = positive_loader(image_dataset(), tiny_net, 4)
    embeddings, labels, _ = collect_positives(tiny_net, loader, [mx.cpu()])
    centers = np.eye(3, 2)
    fig = plot_feature_epoch(tiny_net, loader, [mx.cpu()], centers, CLASSES, title='epoch 1')
    ax = fig.axes[0]
    assert len(embeddings) > 0 and num_points(ax) == len(embeddings) + 3 + len(set(labels))
    assert ax.get_title() == 'epoch 1'
    plotted = np.concatenate([c.get_offsets() for c in scatters(ax) if c.get_label() in CLASSES])
    np.testing.assert_allclose(np.sort(plotted, axis=0), np.sort(embeddings, axis=0), rtol=1e-6)


def test_feature_map_recorder_saves_a_tsne_map_of_the_last_epoch(tiny_net, tmp_path):
    loader = positive_loader(image_dataset(), tiny_net, 4)
    recorder = FeatureMapRecorder({'val': loader}, CLASSES, str(tmp_path / 'run'), [mx.cpu()])
    with pytest.raises(ValueError, match="'val'"):
        recorder.save_tsne('val')
    centers = mx.nd.array(np.eye(3, 2))
    recorder.record(tiny_net, centers, 0)
    recorder.record(tiny_net, centers, 1)
    centers[:] = 7  # training goes on after the last validation
    assert recorder.last['val'][0] == 1
    np.testing.assert_array_equal(recorder.last['val'][3], np.eye(3, 2))
    path = recorder.save_tsne('val')
    assert path == str(tmp_path / 'run_features_val_tsne.png')
    with Image.open(path) as png:
        assert png.format == 'PNG'
    assert sorted(os.listdir(tmp_path)) == ['run_features_val_epoch0.png',
                                            'run_features_val_epoch1.png',
                                            'run_features_val_tsne.png']
