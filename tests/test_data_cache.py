"""Tests of gluon_ssdcl.data.cache: targets computed once, held in memory."""
import mxnet as mx
import numpy as np
import pytest
from test_data_check import write_voc_folder
from test_data_datasets import anchors_64

from gluon_ssdcl.data.cache import TargetCache, cache_nbytes, cache_targets
from gluon_ssdcl.data.datasets import get_dataloader, get_dataset, get_train_transform

ITEMS = {name: [('cat', (3 + i, 4, 30 + 2 * i, 40)), ('dog', (35, 10 + i, 60, 30 + i))]
         for i, name in enumerate('abcde')}
ITEMS['f'] = []


@pytest.fixture
def data(tmp_path):
    root = write_voc_folder(tmp_path / 'c', ITEMS, {'train': list('abcdef'), 'val': ['a']})
    return get_dataset('custom', root)


def test_cached_batches_equal_the_transform(data):
    train, val = data
    anchors = anchors_64()
    loader, _ = get_dataloader(train, val, 48, 40, anchors, batch_size=4, augment=False)
    cache = loader._dataset
    assert isinstance(cache, TargetCache) and len(cache) == len(train)
    assert cache.nbytes == cache_nbytes(len(train), 48, 40, anchors.shape[1])
    transform = get_train_transform(48, 40, anchors, augment=False)
    seen = []
    for images, cls_targets, box_targets in loader:
        assert images.shape == (4, 3, 40, 48) and images.dtype == np.float32
        for image, cls, box in zip(images, cls_targets, box_targets):
            matches = [i for i in range(len(train))
                       if np.array_equal(transform(*train[i])[1].asnumpy(), cls.asnumpy())
                       and np.array_equal(transform(*train[i])[0].asnumpy(), image.asnumpy())]
            assert len(matches) == 1
            # NumPy's offsets against GluonCV's, to float32 rounding
            np.testing.assert_allclose(box.asnumpy(), transform(*train[matches[0]])[2].asnumpy(),
                                       rtol=1e-5, atol=1e-6)
            seen.append(matches[0])
    assert len(seen) == 4 and len(set(seen)) == 4  # 6 items, batch 4, the rest rolls over
    assert np.count_nonzero(cache.cls_targets[5]) == 0  # the image without objects


def test_shuffle_follows_the_seed_and_the_limit_streams(data):
    train, val = data
    anchors = anchors_64()
    loader, _ = get_dataloader(train, val, 48, 40, anchors, batch_size=2, augment=False)

    def order(seed):
        np.random.seed(seed)
        return [batch[1].asnumpy().tobytes() for batch in loader]
    assert order(1) == order(1) and order(1) != order(2)
    streaming, _ = get_dataloader(train, val, 48, 40, anchors, batch_size=2, augment=False,
                                  max_cache_bytes=cache_nbytes(6, 48, 40, anchors.shape[1]) - 1)
    assert not isinstance(streaming._dataset, TargetCache)
    cached = sorted(b.tobytes() for batch in loader for b in batch[1].asnumpy())
    streamed = sorted(b.tobytes() for batch in streaming for b in batch[1].asnumpy())
    assert cached == streamed
    augmented, _ = get_dataloader(train, val, 48, 40, anchors, batch_size=2)
    assert not isinstance(augmented._dataset, TargetCache)


def test_bad_input(data):
    train, _ = data
    transform = get_train_transform(48, 40, anchors_64(), augment=False, normalize=False)
    with pytest.raises(ValueError, match='no images to cache'):
        cache_targets(mx.gluon.data.SimpleDataset([]), transform)
    with pytest.raises(ValueError, match='lengths differ'):
        TargetCache(np.zeros((2, 4, 4, 3), np.uint8), np.zeros((1, 5)), np.zeros((2, 5, 4)))


def test_batch_targets_equal_the_targets_made_image_by_image(data):
    train, _ = data  # 2 boxes an image, and image f without any
    anchors = anchors_64()
    single = get_train_transform(48, 40, anchors, augment=False, normalize=False)
    batched = get_train_transform(48, 40, anchors, augment=False, normalize=False,
                                  batch_targets=True)
    items = [train[i] for i in range(len(train))]
    items[1] = (items[1][0], items[1][1][:1])  # one box: the labels need padding
    images, cls_targets, box_targets = batched.batchify([batched(*item) for item in items])
    for i, item in enumerate(items):
        image, cls, box = single(*item)
        np.testing.assert_array_equal(images[i].asnumpy(), image.asnumpy())
        np.testing.assert_array_equal(cls_targets[i].asnumpy(), cls.asnumpy())
        np.testing.assert_allclose(box_targets[i].asnumpy(), box.asnumpy(), rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(cls_targets[5].asnumpy()) == 0
    assert np.count_nonzero(cls_targets[1].asnumpy() == 2) == 0  # its dog was dropped
