"""SSDCenter: GluonCV's SSD with a per-anchor center-embedding head."""
import logging
import os
from functools import partial

import mxnet as mx
from gluoncv.model_zoo.model_store import short_hash
from gluoncv.model_zoo.ssd import SSD
from gluoncv.nn.coder import MultiPerClassDecoder
from gluoncv.nn.predictor import ConvPredictor
from mxnet import autograd
from mxnet.gluon import nn

__all__ = ['SSDCenter', 'TinyFeatures', 'get_ssd_center', 'initialize_params', 'feature_map_sizes',
           'reuse_map']

logger = logging.getLogger(__name__)

DEFAULT_ROOT = os.path.join('~', '.mxnet', 'models')


class SSDCenter(SSD):
    """SSD whose every anchor predicts an embedding of ``embed_dim`` numbers, and its class
    scores from that embedding.

    Takes GluonCV's :class:`~gluoncv.model_zoo.ssd.SSD` arguments plus ``embed_dim`` and
    ``embed_hidden``. ``embedding_predictors`` holds one ``ConvPredictor(num_anchors *
    embed_dim)`` per feature map, followed by a BatchNorm without scale and shift, flattened
    exactly like the box head, so embedding row ``i`` belongs to anchor ``i``. With
    ``embed_hidden`` H > 0 the predictor is a 1x1 convolution after a 3x3 conv-BN-ReLU of H
    channels: a non-linear embedding. ``class_predictors`` (in place of GluonCV's per-map
    convolutions) is one linear layer, shared by every anchor, from an embedding to its
    ``C + 1`` class scores.

    As in Wen et al. (2016), the softmax reads the features the center loss compacts: the
    softmax keeps the classes apart while the center loss pulls each class together, so the
    embeddings cannot collapse to one point, and k-NN over embeddings and the softmax classify
    in the same space. The BatchNorm standardises every embedding channel over the batch, so
    the center loss cannot fall by shrinking the embeddings and its gradient cannot grow with
    the head's weights.

    Outputs
    -------
    training (inside ``autograd.record``):
        ``[cls_preds (B,N,C+1), box_preds (B,N,4), anchors (1,N,4), embeddings (B,N,D)]``
        (GluonCV's three, then the embeddings).
    inference:
        ``ids (B,K,1), scores (B,K,1), bboxes (B,K,4)`` like GluonCV, plus ``embeddings (B,K,D)``
        of the kept detections when switched on (rows of suppressed detections are -1).
    """

    def __init__(self, network, base_size, *args, embed_dim=16, embed_hidden=0,
                 predictors_kernel=(3, 3), predictors_pad=(1, 1), **kwargs):
        super().__init__(network, base_size, *args, predictors_kernel=predictors_kernel,
                         predictors_pad=predictors_pad, **kwargs)
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, got {embed_dim}")
        if embed_hidden < 0:
            raise ValueError(f"embed_hidden must be 0 or a positive integer, got {embed_hidden}")
        self.base_size = base_size
        self.embed_dim = embed_dim
        self.embed_hidden = embed_hidden
        self.infer_embeddings = False
        with self.name_scope():
            self.embedding_predictors = nn.HybridSequential()
            for generator in self.anchor_generators:
                head = nn.HybridSequential()
                kernel, pad = predictors_kernel, predictors_pad
                if embed_hidden:
                    head.add(nn.Conv2D(embed_hidden, kernel, padding=pad, use_bias=False),
                             nn.BatchNorm(), nn.Activation('relu'))
                    kernel, pad = (1, 1), (0, 0)
                head.add(ConvPredictor(generator.num_depth * embed_dim, kernel=kernel, pad=pad),
                         nn.BatchNorm(center=False, scale=False))
                self.embedding_predictors.add(head)
            self.class_predictors = nn.HybridSequential()
            self.class_predictors.add(nn.Dense(self.num_classes + 1, flatten=False,
                                               in_units=embed_dim))

    @property
    def class_head(self):
        """The layer from the embeddings to the class scores (frozen in center mode)."""
        return self.class_predictors

    def reset_class(self, classes, reuse_weights=None):
        """New class categories: a new class head, as GluonCV's ``SSD.reset_class`` does for its
        heads (the backbone, box and embedding heads are kept).

        Parameters
        ----------
        classes : sequence of str
            The new categories.
        reuse_weights : dict or list, optional
            Classes whose rows of the class head are copied exactly (see :func:`reuse_map`),
            e.g. ``{'seven': '7'}``; the background row is always copied. Rows of other classes
            are initialised anew.

        The centers live in the :class:`~gluon_ssdcl.losses.center.CenterLoss`; resize them with
        the same mapping (:func:`~gluon_ssdcl.checkpoint.restore` does both when a checkpoint
        of other classes starts a run).
        """
        mapping = reuse_map(reuse_weights, self.classes, classes)
        old = self.class_predictors[0]
        ctx = old.weight.list_ctx()
        self._clear_cached_op()
        self.classes = list(classes)
        with self.name_scope():
            head = nn.HybridSequential(prefix=self.class_predictors.prefix)
            head.add(nn.Dense(len(classes) + 1, flatten=False, in_units=self.embed_dim,
                              prefix=old.prefix))
            head.initialize(ctx=ctx)
        for old_param, new_param in zip((old.weight, old.bias), (head[0].weight, head[0].bias)):
            data, new_data = old_param.data(ctx[0]), new_param.data(ctx[0]).copy()
            new_data[0] = data[0]
            for new_index, old_index in mapping.items():
                new_data[new_index + 1] = data[old_index + 1]
            new_param.set_data(new_data)
        self.class_predictors = head
        self.cls_decoder = MultiPerClassDecoder(len(self.classes) + 1, thresh=0.01)

    def set_embeddings(self, infer):
        """Choose whether inference outputs include the kept detections' embeddings.

        Clears the cached graph: call ``hybridize()`` again afterwards if you use it.
        """
        self._clear_cached_op()
        self.infer_embeddings = bool(infer)

    def _flat_head(self, F, features, predictors, width):
        preds = [F.flatten(F.transpose(p(feat), (0, 2, 3, 1)))
                 for feat, p in zip(features, predictors)]
        return F.concat(*preds, dim=1).reshape((0, -1, width))

    def _heads(self, F, x, with_embeddings):
        """Per-anchor outputs: cls (B,N,C+1), box (B,N,4), anchors (1,N,4), embeddings or None."""
        features = self.features(x)
        embeddings = self._flat_head(F, features, self.embedding_predictors, self.embed_dim)
        cls_preds = self.class_predictors(embeddings)
        box_preds = self._flat_head(F, features, self.box_predictors, 4)
        anchors = [F.reshape(ag(feat), shape=(1, -1))
                   for feat, ag in zip(features, self.anchor_generators)]
        anchors = F.concat(*anchors, dim=1).reshape((1, -1, 4))
        return cls_preds, box_preds, anchors, embeddings if with_embeddings else None

    def anchor_outputs(self, x):
        """The training-mode outputs ``[cls_preds, box_preds, anchors, embeddings]`` computed
        in the current autograd mode (so with BatchNorm's running statistics outside training):
        what evaluation needs for the anchors matched to ground truth. x: (B,3,H,W) NDArray."""
        return list(self._heads(mx.nd, x, True))

    # pylint: disable=arguments-differ
    def hybrid_forward(self, F, x):
        training = autograd.is_training()
        cls_preds, box_preds, anchors, embeddings = self._heads(
            F, x, training or self.infer_embeddings)
        if training:
            return [cls_preds, box_preds, anchors, embeddings]
        return self._detect(F, cls_preds, box_preds, anchors, embeddings)

    def detect_anchors(self, embeddings, box_preds, anchors):
        """Inference outputs ``ids (B,K,1), scores (B,K,1), bboxes (B,K,4)`` from per-anchor
        outputs of :meth:`anchor_outputs` (embeddings (B,N,D), box_preds (B,N,4), anchors
        (1,N,4)): the class head on the embeddings, then decoding and NMS, as in inference. With
        the backbone's outputs kept, another class head is evaluated without running it again."""
        return self._detect(mx.nd, self.class_predictors(embeddings), box_preds, anchors, None)

    def _detect(self, F, cls_preds, box_preds, anchors, embeddings):
        """Decode boxes and run NMS. With embeddings, each row carries its anchor's index
        through NMS (one column, not D) and picks that anchor's embedding afterwards."""
        bboxes = self.bbox_decoder(box_preds, anchors)
        cls_ids, scores = self.cls_decoder(F.softmax(cls_preds, axis=-1))
        extra = [bboxes]
        if embeddings is not None:
            first = scores.slice_axis(axis=-1, begin=0, end=1)
            index = F.contrib.arange_like(first, axis=1).reshape((1, -1, 1))
            extra.append(F.broadcast_like(index, first))
        results = []
        for i in range(self.num_classes):
            cls_id = cls_ids.slice_axis(axis=-1, begin=i, end=i + 1)
            score = scores.slice_axis(axis=-1, begin=i, end=i + 1)
            results.append(F.concat(cls_id, score, *extra, dim=-1))
        result = F.concat(*results, dim=1)
        if 0 < self.nms_thresh < 1:
            result = F.contrib.box_nms(
                result, overlap_thresh=self.nms_thresh, topk=self.nms_topk, valid_thresh=0.01,
                id_index=0, score_index=1, coord_start=2, force_suppress=False)
            if self.post_nms > 0:
                result = result.slice_axis(axis=1, begin=0, end=self.post_nms)
        ids = F.slice_axis(result, axis=2, begin=0, end=1)
        scores = F.slice_axis(result, axis=2, begin=1, end=2)
        bboxes = F.slice_axis(result, axis=2, begin=2, end=6)
        if embeddings is None:
            return ids, scores, bboxes
        return ids, scores, bboxes, self._kept_embeddings(F, embeddings, result)

    @staticmethod
    def _kept_embeddings(F, embeddings, result):
        """embeddings (B,N,D) of the anchors named in column 6 of result (B,K,7), -1 rows for
        suppressed detections."""
        anchor_index = F.slice_axis(result, axis=2, begin=6, end=7).reshape((0, -1))
        batch_index = F.broadcast_like(
            F.contrib.arange_like(anchor_index, axis=0).reshape((-1, 1)), anchor_index)
        kept = F.gather_nd(embeddings, F.stack(batch_index, F.relu(anchor_index)))
        # 1 for kept rows (class id >= 0), 0 for suppressed ones (-1): clip rather than a
        # comparison, which has no ONNX converter
        valid = F.clip(F.slice_axis(result, axis=2, begin=0, end=1) + 1, 0, 1)
        return F.broadcast_add(F.broadcast_mul(kept, valid), valid - 1)


def reuse_map(reuse_weights, old_classes, new_classes):
    """``{new index: old index}`` of the classes whose weights a new class list reuses.

    Parameters
    ----------
    reuse_weights : dict, list or None
        As GluonCV's ``reset_class``: ``{new: old}`` with names or indices, or a list of names
        found in both lists; None reuses nothing.
    old_classes, new_classes : sequence of str

    Raises
    ------
    ValueError
        For a name or index not in its list.
    """
    if reuse_weights is None:
        return {}
    pairs = reuse_weights.items() if isinstance(reuse_weights, dict) else [
        (name, name) for name in reuse_weights]
    return {_class_index(new, new_classes, 'new'): _class_index(old, old_classes, 'old')
            for new, old in pairs}


def _class_index(key, classes, which):
    if isinstance(key, str):
        if key not in classes:
            raise ValueError(f"{key!r} is not among the {which} classes {list(classes)}")
        return list(classes).index(key)
    if not 0 <= key < len(classes):
        raise ValueError(f"class index {key} is out of range for the {which} classes "
                         f"{list(classes)}")
    return key


class TinyFeatures(nn.HybridBlock):
    """A plain conv backbone (3x3 conv-BN-ReLU, stride 2 each, or a patch stem) with one output
    per stride 8, 16, 32, ...: ssd_256_small (the CPU default), ssd_256_plain and ssd_64_tiny
    (tests).

    Parameters
    ----------
    channels : tuple of int
        Channels of the stem (stride 8) followed by one entry per output map.
    extra_convs : tuple of int
        Stride-1 3x3 conv-BN-ReLU layers added at the end of each output map's stage, one
        count per output map starting with the stride-8 one (missing entries: none). They widen
        the receptive field where the small objects are read.
    patch_stem : bool
        True: the stem starts with one 4x4 stride-4 conv-BN-ReLU (a patch embedding, as
        ConvNeXt's stem) instead of two 3x3 stride-2 ones. On a CPU those two cost most of
        the step (a 3-channel input and a 128x128 map at 256 px) and the patch layer much less.
    norm_layer, norm_kwargs
        Normalisation layer and its arguments, as in GluonCV.
    """

    def __init__(self, channels=(8, 16, 16, 16), extra_convs=(), patch_stem=False,
                 norm_layer=nn.BatchNorm, norm_kwargs=None, **kwargs):
        for key in ('pretrained', 'ctx', 'root'):
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        norm_kwargs = norm_kwargs or {}

        extra_convs = list(extra_convs) + [0] * (len(channels) - 1 - len(extra_convs))

        def conv_bn_relu(num_channels, extra=0, kernel=3, strides=2, padding=1):
            """A strided conv-BN-ReLU and its ``extra`` stride-1 3x3 ones, in one block."""
            block = nn.HybridSequential()
            for k, s, p in [(kernel, strides, padding)] + [(3, 1, 1)] * extra:
                block.add(nn.Conv2D(num_channels, k, strides=s, padding=p, use_bias=False),
                          norm_layer(**norm_kwargs), nn.Activation('relu'))
            return block

        with self.name_scope():
            self.stem = nn.HybridSequential()
            if patch_stem:
                self.stem.add(conv_bn_relu(channels[0], kernel=4, strides=4, padding=0))
            else:
                self.stem.add(conv_bn_relu(channels[0]), conv_bn_relu(channels[0]))
            self.stem.add(conv_bn_relu(channels[1], extra_convs[0]))
            self.stages = nn.HybridSequential()
            for num_channels, extra in zip(channels[2:], extra_convs[1:]):
                self.stages.add(conv_bn_relu(num_channels, extra))

    def hybrid_forward(self, F, x):
        x = self.stem(x)
        outputs = [x]
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


def feature_map_sizes(features, base_size):
    """Spatial sizes (H, W) of each feature map a backbone gives for a ``base_size`` input.

    Uses symbolic shape inference: no parameter has to be initialised.
    """
    outputs = features(mx.sym.var('data'))
    _, shapes, _ = mx.sym.Group(list(outputs)).infer_shape(data=(1, 3, base_size, base_size))
    return [tuple(shape[2:]) for shape in shapes]


def _check_base_weights(network, root):
    """Fail fast (never download) when the pretrained base weights are not on disk."""
    if 'MXNET_HOME' in os.environ:
        root = os.path.join(os.environ['MXNET_HOME'], 'models')
    try:
        file_name = f"{network}-{short_hash(network)}.params"
    except ValueError as err:
        raise ValueError(f"No pretrained weights exist for base network '{network}': "
                         "pass pretrained_base=False.") from err
    path = os.path.join(os.path.expanduser(root), file_name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Pretrained weights for '{network}' are not available offline: expected {path}. "
            f"Pass pretrained_base=False to train from scratch, or put {file_name} "
            f"in {root} (GluonCV's model store).")


def get_ssd_center(network, base_size, features, filters, sizes, ratios, classes,
                   embed_dim=16, embed_hidden=0, pretrained_base=False, ctx=mx.cpu(),
                   root=DEFAULT_ROOT, **kwargs):
    """Build an :class:`SSDCenter` whose anchor steps follow the real feature-map strides.

    Arguments follow :func:`gluoncv.model_zoo.ssd.get_ssd`, except that ``steps`` are computed
    as ``base_size / feature_map_size`` so anchor centres cover the whole image, and
    ``pretrained_base=True`` raises at once when the base weights are not in ``root``.
    ``network`` names the base network (None when ``features`` is a block class).
    ``embed_dim=None`` builds GluonCV's plain :class:`SSD` with the same anchors and heads
    (for side-by-side comparisons; ``embed_hidden`` is then unused).
    """
    if pretrained_base:
        _check_base_weights(network, root)
    base_name = None if callable(features) else network
    probe = SSD(base_name, base_size, features, filters, sizes, ratios,
                steps=[1] * (len(sizes) - 1), classes=classes, pretrained=False, root=root,
                **kwargs)
    steps = [base_size / w for _, w in feature_map_sizes(probe.features, base_size)]
    block = SSD if embed_dim is None else partial(SSDCenter, embed_dim=embed_dim,
                                                  embed_hidden=embed_hidden)
    net = block(base_name, base_size, features, filters, sizes, ratios, steps, classes=classes,
                pretrained=pretrained_base, ctx=ctx, root=root, **kwargs)
    net.base_size = base_size  # GluonCV's SSD does not keep it
    return net


_ONE_SUFFIXES = ('gamma', 'running_var', 'moving_var')
_ZERO_SUFFIXES = ('beta', 'bias', 'running_mean', 'moving_mean')


def initialize_params(net, ctx, init=None):
    """Initialise every parameter of an :class:`SSDCenter` (or GluonCV SSD) not yet initialised.

    Parameters keep their own initialiser (anchors are such constants); 1-D vectors without one
    (some GluonCV BatchNorms) get ones/zeros by name; the rest get ``init``
    (default ``Xavier(magnitude=2)``). One inference pass on a blank ``base_size`` image then
    completes deferred shapes, so every head (embeddings included) has real arrays even if a
    training mode never runs it. ``ctx`` is a list of contexts.
    """
    init = init or mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2)
    for name, param in net.collect_params().items():
        if param.init is None and name.endswith(_ONE_SUFFIXES):
            param.init = mx.init.One()
        elif param.init is None and name.endswith(_ZERO_SUFFIXES):
            param.init = mx.init.Zero()
    for param in net.collect_params().values():
        if param._data is None and not param._deferred_init:  # pylint: disable=protected-access
            param.initialize(default_init=init, ctx=ctx)
    with_embeddings = isinstance(net, SSDCenter)
    if with_embeddings:
        infer_embeddings = net.infer_embeddings
        net.set_embeddings(infer=True)
    with autograd.predict_mode():
        net(mx.nd.zeros((1, 3, net.base_size, net.base_size), ctx=ctx[0]))
    if with_embeddings:
        net.set_embeddings(infer=infer_embeddings)
