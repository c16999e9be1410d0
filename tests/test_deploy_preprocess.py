"""Tests of gluon_ssdcl.deploy.preprocess: the exported graph's input from an image, as in
validation (GluonCV's SSDDefaultValTransform), and the factors that scale boxes back."""
import mxnet as mx
import numpy as np
import pytest
from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

from gluon_ssdcl.deploy import preprocess


def random_image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize('height, width', [(40, 120), (300, 90)])  # shrunk and enlarged
def test_normalised_input_is_gluoncvs_validation_transform(height, width):
    image = random_image(height, width)
    expected, _ = SSDDefaultValTransform(64, 64)(mx.nd.array(image, dtype='uint8'),
                                                 np.zeros((0, 4)))
    for source in (image, mx.nd.array(image, dtype='uint8')):
        x, scale = preprocess(source, 64)
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (1, 3, 64, 64)
        np.testing.assert_array_equal(x[0], expected.asnumpy())
        np.testing.assert_array_equal(scale, [width / 64, height / 64, width / 64, height / 64])


def test_meta_with_preprocess_gives_resized_pixels_in_nhwc():
    image = random_image(40, 120, seed=1)
    meta = {'base_size': 64, 'preprocess': True}
    x, scale = preprocess(image, meta)
    assert x.dtype == np.float32 and x.shape == (1, 64, 64, 3)
    normalised, _ = preprocess(image, 64)
    # the graph's Preprocess block: /255, mean and std, transposed
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(((x[0] / 255 - mean) / std).transpose(2, 0, 1), normalised[0],
                               atol=1e-5)
    assert x.min() >= 0 and x.max() <= 255 and np.array_equal(x, np.round(x))
    np.testing.assert_array_equal(scale, [120 / 64, 40 / 64, 120 / 64, 40 / 64])
    x, _ = preprocess(image, {'base_size': 64, 'preprocess': False})
    np.testing.assert_array_equal(x, normalised)


def test_scale_takes_boxes_of_the_input_back_to_the_image():
    _, scale = preprocess(random_image(40, 120), 64)
    boxes = np.array([[0, 0, 64, 64], [32, 16, 48, 32]], np.float32)
    np.testing.assert_allclose(boxes * scale, [[0, 0, 120, 40], [60, 10, 90, 20]])


@pytest.mark.parametrize('image', [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                   np.zeros((8, 8, 3), np.float32)])
def test_other_images_are_refused(image):
    with pytest.raises(ValueError, match=r'\(H, W, 3\) uint8'):
        preprocess(image, 64)
