"""MultiBoxCenterLoss: GluonCV's SSD multibox loss plus the center loss, in three modes."""
from collections import namedtuple
from enum import Enum

from mxnet import gluon, nd

from .center import CenterLoss, CenterPush, class_histogram, sum_over_devices

__all__ = ['Mode', 'LossTerms', 'MultiBoxCenterLoss']


class Mode(str, Enum):
    """Training mode: which loss terms are used and which parts of the model train.

    The table of what each mode trains is the README's (Modes): ``softmax`` trains
    ``(L_conf + L_loc) / N``; ``softmax-center`` adds ``λ L_center``; ``center`` trains
    ``(L_obj + L_loc + λ L_center) / N`` with the class head and the centers frozen. The same
    modes drive SSD (:mod:`gluon_ssdcl.engine.train`) and LeNet++
    (:mod:`gluon_ssdcl.experiments.lenet`, with the cross-entropy in place of ``L_conf`` and no
    ``L_loc``); ``N`` counts the positive anchors (SSD) or the samples (LeNet) of the
    mini-batch, the class head is the linear layer from the embeddings to the class scores.

    ``L_obj`` is ``L_conf`` without the class: object against background, ``-log(1 - p_0)`` for
    a positive anchor (any class), ``-log p_0`` for a hard negative. In center mode the center
    loss alone says which class, the class head still says where the objects are. LeNet has no
    background: there the center mode's loss is ``λ L_center`` alone.

    Center mode is a second stage: it pulls the embeddings towards the centers learned by a
    softmax-center first stage, under that stage's class head. Both stay fixed: with the centers
    free, ``L_center`` alone shrinks features and centers together (LeNet's frozen classifier
    fell from 0.95 to 0.29), and on SSD trained centers lost more mAP than fixed ones.
    """
    SOFTMAX = 'softmax'
    SOFTMAX_CENTER = 'softmax-center'
    CENTER = 'center'

    @property
    def uses_center(self) -> bool:
        """Whether the loss has the center term."""
        return self is not Mode.SOFTMAX

    @property
    def trains_class_head(self) -> bool:
        """Whether the class head is trained (else its parameters are frozen)."""
        return self is not Mode.CENTER

    @property
    def trains_centers(self) -> bool:
        """Whether the centers are trained (softmax-center mode only)."""
        return self is Mode.SOFTMAX_CENTER


LossTerms = namedtuple('LossTerms', ['total', 'cls', 'box', 'center', 'num_pos'])
LossTerms.__doc__ = """Loss terms, each a list with one (B,) array per device (summed over anchors,
divided by N), and ``num_pos``: one (1,) copy per device of N, the positive anchors of the whole
mini-batch (the number the center trainer steps with, see
:func:`~gluon_ssdcl.engine.train.make_center_trainer`)."""


class _MultiBoxTerms(gluon.HybridBlock):
    """Per-device SSD confidence (hard negative mining) and smooth-L1 box losses.

    The same computation as :class:`gluoncv.loss.SSDMultiBoxLoss`, but normalised by a
    given ``inv_num_pos`` array, so no host synchronisation is needed.

    Inputs: cls_pred (B,N,C+1), box_pred (B,N,4), cls_target (B,N), box_target (B,N,4),
    inv_num_pos (1,) = 1 / max(1, positives in the whole mini-batch).
    Outputs: cls_loss (B,) over positives and hard negatives, box_loss (B,), with
    ``objectness`` (center mode) objectness_loss (B,) over the same anchors as cls_loss (object
    of any class against background), and with ``negatives`` the hard-negative mask (B,N).
    """

    def __init__(self, negative_mining_ratio=3, rho=1.0, objectness=False, negatives=False,
                 **kwargs):
        super().__init__(**kwargs)
        self._negative_mining_ratio = max(0, negative_mining_ratio)
        self._rho = rho
        self._objectness = objectness
        self._negatives = negatives

    # pylint: disable=arguments-differ
    def hybrid_forward(self, F, cls_pred, box_pred, cls_target, box_target, inv_num_pos):
        pos = cls_target > 0
        log_p = F.log_softmax(cls_pred, axis=-1)
        cls_loss = -F.pick(log_p, cls_target, axis=-1, keepdims=False)
        rank = (cls_loss * (pos - 1)).argsort(axis=1).argsort(axis=1)
        num_neg = F.sum(pos, axis=1) * self._negative_mining_ratio
        hard_negative = F.broadcast_lesser(rank, num_neg.expand_dims(-1))
        selected = (pos + hard_negative) > 0
        box_loss = F.abs(box_pred - box_target)
        box_loss = F.where(box_loss > self._rho, box_loss - 0.5 * self._rho,
                           (0.5 / self._rho) * F.square(box_loss))
        losses = [F.where(selected, cls_loss, F.zeros_like(cls_loss)),
                  F.broadcast_mul(box_loss, pos.expand_dims(axis=-1))]
        if self._objectness:
            # -log(1 - p_0) = -logsumexp over the object classes of the log-probabilities
            objects = F.slice_axis(log_p, axis=-1, begin=1, end=None)
            top = F.max(objects, axis=-1)
            object_loss = -(top + F.log(F.sum(F.exp(F.broadcast_sub(objects,
                                                                    top.expand_dims(-1))),
                                              axis=-1)))
            losses.append(F.where(selected, F.where(pos, object_loss, cls_loss),
                                  F.zeros_like(cls_loss)))
        losses = tuple(F.broadcast_mul(F.sum(loss, axis=0, exclude=True), inv_num_pos)
                       for loss in losses)
        return losses + (hard_negative * (cls_target == 0),) if self._negatives else losses


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


class MultiBoxCenterLoss(gluon.Block):
    r"""SSD multibox loss with a center loss on the embeddings of positive anchors.

    ``softmax``: :math:`(L_{conf} + L_{loc}) / N`, equal to ``gluoncv.loss.SSDMultiBoxLoss``;
    ``softmax-center``: :math:`(L_{conf} + L_{loc} + \lambda L_{center}) / N`; ``center``:
    :math:`(L_{obj} + L_{loc} + \lambda L_{center}) / N` (``L_{obj}``: ``L_{conf}`` of object
    against background, see :class:`Mode`), where :math:`L_{center} = \sum_j
    \mathrm{mean}_{i: y_i=j} \frac{1}{2}\lVert x_i - c_j\rVert^2`. ``N`` (positives) and the
    class histogram of the center loss are counted over the whole mini-batch, across devices,
    and ``N`` is returned in :class:`LossTerms` (why the center loss is divided by ``N`` too,
    and what that means for the center step: :func:`~gluon_ssdcl.engine.train.make_center_trainer`).

    Parameters
    ----------
    num_classes : int
        Number of object classes C (background excluded).
    embed_dim : int
        Embedding dimension D.
    mode : Mode or str
        'softmax', 'softmax-center' or 'center'.
    lmbd : float
        Weight λ > 0 of the center loss.
    negative_mining_ratio, rho : float
        As in ``SSDMultiBoxLoss``.
    push_margin : float
        Δ of the push-away term (:class:`~gluon_ssdcl.losses.center.CenterPush`, ORE's hinge):
        each positive embedding is pushed beyond Δ from the centers of the other classes
        present in the mini-batch, weighted like the center term (``λ L_push / N``,
        class-balanced); 0 (default): no push. Center modes only.
    push_negatives : bool
        Push the hard negatives (background, counted as one class) beyond Δ from every present
        center too; needs ``push_margin``.
    sum_counts : callable, optional
        ``sum_counts(name, values) -> sums``: the sum of per-device count arrays ('num_pos' (1,),
        'histogram' (C,)) over the whole mini-batch, one copy per device. Default: over the
        devices (:func:`~gluon_ssdcl.losses.center.sum_over_devices`); a distributed job passes
        :meth:`gluon_ssdcl.engine.distributed.Workers.sum`, which also sums over the workers.

    Inputs (lists with one array per device, or single arrays)
    ------
    cls_pred (B,N,C+1), box_pred (B,N,4), cls_target (B,N) with 0 background, -1 ignored and
    k+1 for class k, box_target (B,N,4), embeddings (B,N,D) (needed by the center modes).

    Outputs
    -------
    :class:`LossTerms` ``(total, cls, box, center, num_pos)``.
    """

    def __init__(self, num_classes, embed_dim, mode=Mode.SOFTMAX, lmbd=1.0,
                 negative_mining_ratio=3, rho=1.0, push_margin=0.0, push_negatives=False,
                 sum_counts=None, **kwargs):
        super().__init__(**kwargs)
        self.mode = Mode(mode)
        if push_margin < 0 or (push_margin and not self.mode.uses_center):
            raise ValueError(f"push_margin must be >= 0, and 0 in softmax mode (no centers), "
                             f"got {push_margin} in {self.mode.value} mode")
        if push_negatives and not push_margin:
            raise ValueError("push_negatives needs push_margin > 0")
        self.push_negatives = push_negatives
        self.sum_counts = sum_counts or (lambda name, values: sum_over_devices(values))
        if not lmbd > 0:
            raise ValueError(f"lmbd (the center-loss weight) must be > 0, got {lmbd}")
        self.lmbd = lmbd
        self.num_classes = num_classes
        with self.name_scope():
            self.multibox = _MultiBoxTerms(negative_mining_ratio, rho,
                                           objectness=not self.mode.trains_class_head,
                                           negatives=push_negatives)
            self.center_loss = CenterLoss(num_classes, embed_dim)
            self.push = CenterPush(num_classes, push_margin) if push_margin else None

    def hybridize(self, active=True, **kwargs):
        """Hybridize the per-device parts (the cross-device sums stay imperative)."""
        for block in (self.multibox, self.center_loss, self.push):
            if block is not None:
                block.hybridize(active, **kwargs)

    # pylint: disable=arguments-differ
    def forward(self, cls_pred, box_pred, cls_target, box_target, embeddings=None):
        cls_pred, box_pred, cls_target, box_target = [
            _as_list(x) for x in (cls_pred, box_pred, cls_target, box_target)]
        num_pos = self.sum_counts('num_pos', [(ct > 0).sum() for ct in cls_target])
        inv_num_pos = [1.0 / nd.maximum(n, 1.0) for n in num_pos]
        # (cls, box[, objectness][, hard-negative mask]) per device
        cls_losses, box_losses, *others = zip(*[
            self.multibox(*inputs)
            for inputs in zip(cls_pred, box_pred, cls_target, box_target, inv_num_pos)])
        negatives = others.pop() if self.push_negatives else None
        if not self.mode.uses_center:
            totals = [c + b for c, b in zip(cls_losses, box_losses)]
            zeros = [b.zeros_like() for b in box_losses]
            return LossTerms(totals, list(cls_losses), list(box_losses), zeros, num_pos)
        if embeddings is None:
            raise ValueError(f"mode '{self.mode.value}' needs the embeddings")
        embeddings = _as_list(embeddings)
        labels = [(ct - 1).reshape(-1) for ct in cls_target]
        masks = [(ct > 0).reshape(-1) for ct in cls_target]
        counts = self.sum_counts('histogram', [class_histogram(nd, lab, self.num_classes, mask)
                                               for lab, mask in zip(labels, masks)])
        center_losses = [
            nd.broadcast_mul(
                self.center_loss(emb.reshape((-1, emb.shape[-1])), lab, mask, cnt)
                .reshape_like(ct).sum(axis=1), self.lmbd * inv)
            for emb, lab, mask, cnt, ct, inv in zip(embeddings, labels, masks, counts, cls_target,
                                                    inv_num_pos)]
        if self.push is not None:
            center_losses = [c + p for c, p in zip(center_losses, self._push_losses(
                embeddings, labels, masks, counts, negatives, cls_target, inv_num_pos))]
        totals = [b + c for b, c in zip(box_losses, center_losses)]
        totals = [t + c for t, c in zip(totals, cls_losses if self.mode.trains_class_head
                                        else others[0])]
        return LossTerms(totals, list(cls_losses), list(box_losses), center_losses, num_pos)

    def _push_losses(self, embeddings, labels, masks, counts, negatives, cls_target,
                     inv_num_pos):
        """Per device, ``λ L_push / N`` (B,): positives weighted ``1 / n_{y_i}``, hard negatives
        (with ``push_negatives``) ``1 / n_negatives``, both counted over the mini-batch."""
        if negatives is not None:
            negatives = [n.reshape(-1) for n in negatives]
            num_neg = self.sum_counts('num_neg', [n.sum() for n in negatives])
        losses = []
        for d, (emb, lab, mask, cnt, ct, inv) in enumerate(zip(
                embeddings, labels, masks, counts, cls_target, inv_num_pos)):
            weights = nd.take(1.0 / nd.maximum(cnt, 1.0), nd.relu(lab)) * mask
            if negatives is not None:
                weights = weights + negatives[d] / nd.maximum(num_neg[d], 1.0)
            centers = self.center_loss.centers.weight.data(emb.context)
            values = self.push(emb.reshape((-1, emb.shape[-1])), lab, weights, centers, cnt > 0)
            losses.append(nd.broadcast_mul(values.reshape_like(ct).sum(axis=1),
                                           self.lmbd * inv))
        return losses
