"""Training: the modes' frozen parameters and the two trainers (network and centers)."""
import logging

from mxnet import gluon

from .loss import Mode

__all__ = ['apply_mode', 'make_center_trainer', 'make_trainers']

logger = logging.getLogger(__name__)


def _set_grad_req(block, trainable):
    block.collect_params().setattr('grad_req', 'write' if trainable else 'null')


def apply_mode(net, center_loss, mode):
    """Freeze (``grad_req='null'``) what ``mode`` does not train and switch the net's outputs.

    softmax: the embedding head and the centers are unused (the net skips the embeddings);
    center: the class predictors are frozen; softmax-center: everything trains.
    """
    mode = Mode(mode)
    net.set_embeddings(train=mode.uses_center)
    _set_grad_req(net.embedding_predictors, mode.uses_center)
    _set_grad_req(net.class_predictors, mode.trains_classifier)
    _set_grad_req(center_loss, mode.uses_center)


def make_trainers(net, center_loss, mode, lr, momentum=0.9, wd=5e-4, alpha=0.5, lmbd=1.0,
                  lr_scheduler=None, kvstore='device'):
    """The network trainer and the center trainer of DESIGN.md (after :func:`apply_mode`).

    The network trainer: SGD with momentum and weight decay over every trainable parameter of
    ``net`` (not the centers; not the class predictors in center mode). The center trainer:
    plain SGD at rate ``alpha`` on the center gradient divided by ``lmbd``, so that a step
    moves each present center to ``c - alpha * (c - mean of its class)``, whatever ``lmbd``;
    None in softmax mode. Step both with ``step(1)``: the loss is already normalised.

    Returns
    -------
    (gluon.Trainer, gluon.Trainer or None)
    """
    mode = Mode(mode)
    apply_mode(net, center_loss, mode)
    trainable = {name: param for name, param in net.collect_params().items()
                 if param.grad_req != 'null'}
    net_trainer = gluon.Trainer(
        trainable, 'sgd', {'learning_rate': lr, 'momentum': momentum, 'wd': wd,
                           'lr_scheduler': lr_scheduler}, kvstore=kvstore)
    if not mode.uses_center:
        return net_trainer, None
    return net_trainer, make_center_trainer(center_loss, alpha, lmbd, kvstore)


def make_center_trainer(center_loss, alpha, lmbd, kvstore='device'):
    """Plain SGD over the centers at rate ``alpha`` on their gradient divided by ``lmbd``.

    With the loss ``lmbd * CenterLoss``, ``step(1)`` moves each center present in the batch to
    ``c - alpha * (c - mean of its class's features)`` (Wen et al., 2016).
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha (the center update rate) must be in (0, 1], got {alpha}")
    if not lmbd > 0:
        raise ValueError(f"lmbd (the center-loss weight) must be > 0, got {lmbd}")
    return gluon.Trainer(
        center_loss.collect_params(), 'sgd',
        {'learning_rate': alpha, 'momentum': 0.0, 'wd': 0.0, 'rescale_grad': 1.0 / lmbd},
        kvstore=kvstore)
