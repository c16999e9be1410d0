import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from gluon_ssdcl import get_model, initialize_params, list_models
from gluon_ssdcl.model.ssd import TinyFeatures, feature_map_sizes

REQUIRED = ['ssd_300_vgg16_atrous_center_voc', 'ssd_300_vgg16_atrous_center_coco',
            'ssd_300_vgg16_atrous_center_custom', 'ssd_512_vgg16_atrous_center_voc',
            'ssd_512_vgg16_atrous_center_custom', 'ssd_512_resnet50_v1_center_voc',
            'ssd_512_resnet50_v1_center_custom', 'ssd_512_mobilenet1.0_center_voc',
            'ssd_512_mobilenet1.0_center_custom', 'ssd_300_mobilenet0.25_center_voc',
            'ssd_300_mobilenet0.25_center_custom']


def one_per_network(names):
    """The first name of each network (``ssd_<size>_<base>``): the data-set suffix only
    changes the number of classes, which the other tests cover."""
    first = {}
    for name in names:
        first.setdefault(name.rsplit('_center_', 1)[0], name)
    return list(first.values())


def build(name, **kwargs):
    if name.endswith('_custom'):
        kwargs.setdefault('classes', ['cat', 'dog'])
    return get_model(name, embed_dim=3, **kwargs)


def input_size(name, net):
    """VGG's extra layers need the full base size; the others run on 64 px."""
    return net.base_size if 'vgg' in name else 64


def test_required_names_are_registered():
    assert set(REQUIRED) <= set(list_models())
    assert any('tiny' in name for name in list_models())


def run_all(net, x):
    with autograd.train_mode():
        train_out = [o.asnumpy() for o in net(x)]
    net.set_embeddings(infer=True)
    infer_out = [o.asnumpy() for o in net(x)]
    net.set_embeddings(infer=False)
    return train_out, infer_out


@pytest.mark.parametrize('name', one_per_network(list_models()))
def test_model_shapes_and_hybridized_equals_imperative(name):
    net = build(name)
    initialize_params(net, [mx.cpu()])
    size = input_size(name, net)
    batch = 1 if 'vgg' in name else 2
    x = nd.random.uniform(shape=(batch, 3, size, size))
    train_out, infer_out = run_all(net, x)
    num_anchors = train_out[2].shape[1]
    num_classes = len(net.classes)
    assert [o.shape for o in train_out] == [(batch, num_anchors, num_classes + 1),
                                           (batch, num_anchors, 4), (1, num_anchors, 4),
                                           (batch, num_anchors, 3)]
    k = infer_out[0].shape[1]
    assert [o.shape for o in infer_out] == [(batch, k, 1), (batch, k, 1), (batch, k, 4),
                                           (batch, k, 3)]
    assert len(net(x)) == 3  # GluonCV's ids, scores, bboxes by default
    net.hybridize()
    hybrid_train, hybrid_infer = run_all(net, x)
    for want, got in zip(train_out + infer_out, hybrid_train + hybrid_infer):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', list_models())
def test_anchor_centres_cover_the_whole_image(name):
    net = build(name)
    net.anchor_generators.initialize()
    base = net.base_size
    sizes = feature_map_sizes(net.features, base)
    for generator, (h, w) in zip(net.anchor_generators, sizes):
        anchors = generator.anchors.data().asnumpy()[0, 0, :h, :w].reshape(-1, 4)
        step = base / w
        assert anchors[:, 0].max() == pytest.approx(base - step / 2)
        assert anchors[:, 1].max() == pytest.approx(base - step / 2)
        assert anchors[:, :2].min() == pytest.approx(step / 2)


def test_inference_embeddings_belong_to_their_boxes():
    # running statistics in both modes, so the training-mode heads equal the inference ones
    net = get_model('ssd_64_tiny_center_custom', classes=['a', 'b', 'c'], embed_dim=2,
                    norm_kwargs={'use_global_stats': True})
    initialize_params(net, [mx.cpu()])
    net.set_nms(nms_thresh=0.45, nms_topk=-1, post_nms=-1)
    x = nd.random.uniform(shape=(1, 3, 64, 64))
    with autograd.predict_mode():  # per-anchor heads, BatchNorms on running statistics
        cls_preds, box_preds, anchors, embeddings = net.anchor_outputs(x)
    decoded = net.bbox_decoder(box_preds, anchors)[0].asnumpy()
    scores = nd.softmax(cls_preds, axis=-1)[0].asnumpy()
    net.set_embeddings(infer=True)
    ids, kept_scores, bboxes, kept_emb = [o[0].asnumpy() for o in net(x)]
    kept = np.flatnonzero(ids[:, 0] >= 0)
    assert len(kept) > 3
    for row in kept[[0, len(kept) // 2, -1]]:
        class_id = int(ids[row, 0])
        match = np.flatnonzero(np.all(np.abs(decoded - bboxes[row]) < 1e-4, axis=1) &
                               (np.abs(scores[:, class_id + 1] - kept_scores[row, 0]) < 1e-5))
        assert len(match) == 1
        np.testing.assert_allclose(kept_emb[row], embeddings[0, match[0]].asnumpy(), rtol=1e-5)
    suppressed = ids[:, 0] < 0
    assert suppressed.any()
    np.testing.assert_array_equal(kept_emb[suppressed], -1)


def test_initialize_params_keeps_anchors_and_handles_mobilenet():
    reference = build('ssd_256_mobilenet0.25_center_digits')
    reference.anchor_generators.initialize()  # the anchors' own Constant initialiser only
    before = [g.anchors.data().asnumpy() for g in reference.anchor_generators]
    net = build('ssd_256_mobilenet0.25_center_digits')
    initialize_params(net, [mx.cpu()])
    after = [g.anchors.data().asnumpy() for g in net.anchor_generators]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_pretrained_base_without_weights_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv('MXNET_HOME', raising=False)
    with pytest.raises(FileNotFoundError, match='pretrained_base=False'):
        get_model('ssd_300_mobilenet0.25_center_voc', pretrained_base=True, root=str(tmp_path))
    assert not os.listdir(tmp_path)  # nothing written, nothing downloaded


def test_bad_names_and_classes():
    with pytest.raises(ValueError, match='classes'):
        get_model('ssd_64_tiny_center_custom')
    with pytest.raises(ValueError, match='Unknown model'):
        get_model('ssd_300_nonexistent_center_voc')
    with pytest.raises(ValueError, match='_custom'):
        get_model('ssd_300_vgg16_atrous_center_voc', classes=['x'])
    with pytest.raises(ValueError, match='embed_dim'):
        get_model('ssd_64_tiny_center_digits', embed_dim=0)


def test_class_scores_are_one_linear_map_of_the_embeddings(tiny_net):
    x = nd.random.uniform(shape=(2, 3, 64, 64))
    with autograd.train_mode():
        cls_preds, _, _, embeddings = [o.asnumpy() for o in tiny_net(x)]
    dense = tiny_net.class_predictors[0]
    weight, bias = dense.weight.data().asnumpy(), dense.bias.data().asnumpy()
    assert weight.shape == (len(tiny_net.classes) + 1, tiny_net.embed_dim)
    np.testing.assert_allclose(cls_preds, embeddings @ weight.T + bias, rtol=1e-4, atol=1e-5)


def _conv(x, weight, bias=None, pad=0):
    """NumPy 2-D convolution, stride 1: x (C, H, W), weight (K, C, k, k) -> (K, H', W')."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = weight.shape[-1]
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    patches = np.stack([x[:, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=1)
    out = np.einsum('kcij,cijhw->khw', weight.reshape(weight.shape[:2] + (k, k)),
                    patches.reshape(x.shape[0], k, k, h, w))
    return out if bias is None else out + bias[:, None, None]


def _batchnorm(x, bn, eps=1e-5):
    """NumPy BatchNorm with running statistics (predict mode), x (C, H, W); eps is MXNet's
    default. Read after a forward pass: MXNet then holds gamma at 1 for ``scale=False``."""
    get = {name.rsplit('_', 1)[-1]: p.data().asnumpy() for name, p in bn.params.items()}
    factor = get['gamma'] / np.sqrt(get['var'] + eps)
    return (x - get['mean'][:, None, None]) * factor[:, None, None] + get['beta'][:, None, None]


def test_embed_hidden_is_a_conv_bn_relu_before_a_1x1_predictor():
    """embed_hidden=H: embedding = BN(1x1 conv(ReLU(BN(3x3 conv of H channels)))) of the first
    feature map, against NumPy with random running statistics; H=0 keeps the 3x3 predictor."""
    net = get_model('ssd_64_tiny_center_custom', classes=['a', 'b'], embed_dim=2, embed_hidden=5)
    initialize_params(net, [mx.cpu()])
    rng = np.random.RandomState(0)
    for name, param in net.embedding_predictors[0].collect_params().items():
        if name.endswith(('running_mean', 'running_var', 'gamma', 'beta')):
            low = 0.5 if name.endswith(('running_var', 'gamma')) else -0.5
            param.set_data(nd.array(rng.uniform(low, low + 1, param.shape)))
    x = nd.random.uniform(shape=(1, 3, 64, 64))
    with autograd.predict_mode():
        embeddings = net.anchor_outputs(x)[3].asnumpy()[0]
        feature = net.features(x)[0].asnumpy()[0]
    conv, bn, _, predictor, out_bn = net.embedding_predictors[0]
    assert conv.weight.shape[:2] == (5, 16) and conv.weight.shape[2:] == (3, 3)
    assert predictor.predictor.weight.shape[2:] == (1, 1)
    hidden = np.maximum(_batchnorm(_conv(feature, conv.weight.data().asnumpy(), pad=1), bn), 0)
    want = _batchnorm(_conv(hidden, predictor.predictor.weight.data().asnumpy(),
                            predictor.predictor.bias.data().asnumpy()), out_bn)
    anchors = net.anchor_generators[0].num_depth
    rows = want.shape[1] * want.shape[2] * anchors
    # GluonCV's flattening: (H, W, anchor, D) per image
    want = want.transpose(1, 2, 0).reshape(rows, 2)
    assert rows > 0
    np.testing.assert_allclose(embeddings[:rows], want, rtol=1e-4, atol=1e-4)
    plain = get_model('ssd_64_tiny_center_custom', classes=['a', 'b'], embed_dim=2)
    assert len(plain.embedding_predictors[0]) == 2  # the 3x3 predictor and its BatchNorm
    with pytest.raises(ValueError, match='embed_hidden'):
        get_model('ssd_64_tiny_center_digits', embed_hidden=-1)


def test_training_embeddings_are_standardised_per_channel(tiny_net):
    x = nd.random.uniform(shape=(4, 3, 64, 64))
    with autograd.train_mode():
        embeddings = tiny_net(x)[3].asnumpy()
    first_map = tiny_net.features(x)[0].shape[2:]
    anchors = tiny_net.anchor_generators[0].num_depth
    rows = first_map[0] * first_map[1] * anchors
    per_channel = embeddings[:, :rows].reshape(4, -1, anchors, embeddings.shape[-1])
    np.testing.assert_allclose(per_channel.mean(axis=(0, 1)), 0, atol=1e-4)
    np.testing.assert_allclose(per_channel.var(axis=(0, 1)), 1, atol=1e-2)


def test_reset_class_copies_the_reused_rows_exactly(tiny_net):
    old = tiny_net.class_predictors[0]
    old_weight, old_bias = old.weight.data().asnumpy(), old.bias.data().asnumpy()
    tiny_net.reset_class(['x', 'b', 'a', 'y'], reuse_weights={'x': 'c', 'b': 'b', 2: 0})
    head = tiny_net.class_predictors[0]
    weight, bias = head.weight.data().asnumpy(), head.bias.data().asnumpy()
    assert weight.shape == (5, 2) and tiny_net.classes == ['x', 'b', 'a', 'y']
    for new_row, old_row in ((0, 0), (1, 3), (2, 2), (3, 1)):  # background, x<-c, b<-b, a<-a
        np.testing.assert_array_equal(weight[new_row], old_weight[old_row])
        np.testing.assert_array_equal(bias[new_row], old_bias[old_row])
    assert not np.array_equal(weight[4], old_weight[1])  # y: new
    ids, scores, boxes = tiny_net(mx.nd.zeros((1, 3, 64, 64)))
    assert ids.asnumpy().max() < 4


def test_a_reset_net_trains_a_step(tiny_net):
    from mxnet import autograd

    from gluon_ssdcl import MultiBoxCenterLoss
    from gluon_ssdcl.engine.train import make_trainers
    tiny_net.reset_class(['a', 'new'], reuse_weights=['a'])
    loss_fn = MultiBoxCenterLoss(2, 2, mode='softmax-center')
    loss_fn.initialize()
    net_trainer, center_trainer = make_trainers(tiny_net, loss_fn.center_loss, 'softmax-center',
                                                lr=0.1)
    before = tiny_net.class_predictors[0].weight.data().asnumpy().copy()
    x = mx.nd.random.uniform(shape=(2, 3, 64, 64))
    with autograd.record():
        cls, box, _, emb = tiny_net(x)
        targets = mx.nd.array(np.random.RandomState(0).choice([0, 1, 2], size=cls.shape[:2]))
        terms = loss_fn(cls, box, targets, mx.nd.zeros_like(box), emb)
    autograd.backward(terms.total)
    net_trainer.step(1)
    assert not np.array_equal(tiny_net.class_predictors[0].weight.data().asnumpy(), before)


@pytest.mark.parametrize('reuse, message', [({'x': 'zebra'}, "'zebra' is not among the old"),
                                            ({'zebra': 'a'}, "'zebra' is not among the new"),
                                            ({0: 7}, 'index 7 is out of range')])
def test_reset_class_rejects_unknown_classes(tiny_net, reuse, message):
    with pytest.raises(ValueError, match=message):
        tiny_net.reset_class(['x'], reuse_weights=reuse)


def test_tiny_features_extra_convs_keep_strides_and_old_parameter_names():
    plain = TinyFeatures(channels=(4, 8, 8, 8))
    deeper = TinyFeatures(channels=(4, 8, 8, 8), extra_convs=(2, 1))
    for block in (plain, deeper):
        block.initialize()
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    assert [o.shape for o in plain(x)] == [o.shape for o in deeper(x)] == [
        (1, 8, 8, 8), (1, 8, 4, 4), (1, 8, 2, 2)]
    plain_names = set(plain._collect_params_with_prefix())
    deeper_names = set(deeper._collect_params_with_prefix())
    # a checkpoint of the plain backbone (structural names) still names the same parameters
    assert plain_names < deeper_names
    convs = {name.rsplit('.', 1)[0] for name in deeper_names - plain_names
             if name.endswith('weight') and name.count('.') == 3}
    assert convs == {'stem.2.3', 'stem.2.6', 'stages.0.3'}  # 2 after the stride-8 map, 1 after 16
    assert deeper.stem[2][3]._kwargs['stride'] == (1, 1)


def test_patch_stem_is_a_4x4_stride_4_conv_bn_relu_of_non_overlapping_patches():
    """patch_stem=True: the first layer maps each 4x4x3 patch to channels[0] numbers (a NumPy
    matrix product of the patches), BatchNorm with its running statistics, ReLU; the maps keep
    the plain backbone's strides."""
    features = TinyFeatures(channels=(4, 8, 8, 8), extra_convs=(1,), patch_stem=True)
    features.initialize(mx.init.Normal(0.5))
    x = np.random.RandomState(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    outputs = features(mx.nd.array(x))
    plain = TinyFeatures(channels=(4, 8, 8, 8), extra_convs=(1,))
    plain.initialize()
    assert [o.shape for o in outputs] == [o.shape for o in plain(mx.nd.array(x))] == [
        (2, 8, 8, 8), (2, 8, 4, 4), (2, 8, 2, 2)]
    conv, norm = features.stem[0][0], features.stem[0][1]
    weight = conv.weight.data().asnumpy()  # (4, 3, 4, 4)
    patches = x.reshape(2, 3, 16, 4, 16, 4).transpose(0, 2, 4, 1, 3, 5).reshape(2, 16, 16, 48)
    linear = patches @ weight.reshape(4, 48).T  # (2, 16, 16, 4)
    gamma, beta, mean, var = (norm.params.get(n).data().asnumpy() for n in
                              ('gamma', 'beta', 'running_mean', 'running_var'))
    expected = np.maximum((linear - mean) / np.sqrt(var + 1e-5) * gamma + beta, 0)
    np.testing.assert_allclose(features.stem[0](mx.nd.array(x)).asnumpy(),
                               expected.transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-5)
    assert (expected > 0).any() and (expected == 0).any()


def test_the_default_network_builds_hybridizes_and_trains_a_step_at_full_size():
    """The CPU default, at its real size: as many anchors as its maps and ratios make, the same
    outputs hybridized and imperative, and a few training steps on real targets that move the
    weights and lower the loss on that batch."""
    from gluon_ssdcl import MultiBoxCenterLoss
    from gluon_ssdcl.data.datasets import get_train_transform
    from gluon_ssdcl.engine.train import make_trainers
    from gluon_ssdcl.evaluation.inference import net_anchors
    from gluon_ssdcl.model import zoo
    mx.random.seed(0)
    net = get_model('ssd_256_small_center_digits')
    initialize_params(net, [mx.cpu()])
    _, base_size, features, _, ratios, _ = zoo._ARCHITECTURES['ssd_256_small']
    maps = feature_map_sizes(features(), base_size)
    images = np.random.RandomState(0).randint(0, 255, (2, 300, 300, 3)).astype(np.uint8)
    # a thin digit-like box (a handwritten 1) and a square one
    labels = [np.array([[100, 60, 118, 150, 1, 0]], 'float32'),
              np.array([[20, 30, 80, 90, 7, 0], [150, 150, 190, 260, 1, 0]], 'float32')]
    anchors = net_anchors(net)
    # GluonCV's anchors: one per ratio at the first size, plus one at the geometric mean size
    assert anchors.shape[1] == sum(h * w * (len(r) + 1) for (h, w), r in zip(maps, ratios))
    transform = get_train_transform(base_size, base_size, anchors, augment=False)
    batch = [transform(nd.array(image, dtype='uint8'), label)
             for image, label in zip(images, labels)]
    x, cls_targets, box_targets = (nd.stack(*parts) for parts in zip(*batch))
    assert (cls_targets.asnumpy() > 0).sum() >= 3

    with autograd.train_mode():
        imperative = [out.asnumpy() for out in net(x)]
        net.hybridize(static_alloc=True, static_shape=True)
        for hybrid, expected in zip(net(x), imperative):
            np.testing.assert_allclose(hybrid.asnumpy(), expected, rtol=1e-4, atol=1e-4)

    loss_fn = MultiBoxCenterLoss(len(net.classes), net.embed_dim, mode='softmax-center')
    loss_fn.initialize()
    net_trainer, _ = make_trainers(net, loss_fn.center_loss, 'softmax-center', lr=0.002)
    before = net.class_predictors[0].weight.data().asnumpy().copy()
    losses = []
    for _ in range(5):
        with autograd.record():
            cls, box, _, emb = net(x)
            terms = loss_fn(cls, box, cls_targets, box_targets, emb)
        autograd.backward(terms.total)
        net_trainer.step(1)
        losses.append(sum(float(part.asnumpy().sum()) for part in terms.total))
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]
    assert not np.array_equal(net.class_predictors[0].weight.data().asnumpy(), before)

