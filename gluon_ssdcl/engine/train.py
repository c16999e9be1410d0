"""Training: the modes' frozen parameters, the two trainers, the loop and its checkpoints."""
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import mxnet as mx
import numpy as np
from gluoncv.utils.lr_scheduler import LRScheduler, LRSequential
from mxnet import autograd, gluon

from ..losses.multibox import Mode
from ..utils.progress import progress
from .checkpoint import load_checkpoint, restore, save_checkpoint
from .distributed import Workers

__all__ = ['set_trainable', 'apply_mode', 'make_trainers', 'make_center_trainer', 'step_trainers',
           'make_lr_scheduler', 'set_seed', 'NonFiniteError', 'check_finite',
           'weights_finite_flag', 'TrainConfig', 'train_epoch', 'fit']

logger = logging.getLogger(__name__)


def set_trainable(block, trainable):
    """Give every parameter of ``block`` a gradient (``grad_req='write'``) or none ('null')."""
    block.collect_params().setattr('grad_req', 'write' if trainable else 'null')


def apply_mode(net, center_loss, mode):
    """Freeze (``grad_req='null'``) what ``mode`` does not train; see the table of
    :class:`~gluon_ssdcl.losses.multibox.Mode`.

    Parameters
    ----------
    net : SSDCenter or LeNetPlusPlus
        Its ``class_head`` (the layer from embeddings to class scores) is frozen in center mode
        and trainable otherwise; its other parameters are left as they are.
    center_loss : CenterLoss or None
        Holder of the centers; trainable when ``mode.trains_centers``. May be None in softmax
        mode.
    mode : Mode or str
    """
    mode = Mode(mode)
    set_trainable(net.class_head, mode.trains_class_head)
    if center_loss is not None:
        set_trainable(center_loss, mode.trains_centers)


def make_trainers(net, center_loss, mode, lr, momentum=0.9, wd=5e-4, alpha=0.5, lmbd=1.0,
                  lr_scheduler=None, clip_gradient=None, kvstore='device'):
    """The network trainer and the center trainer, after :func:`apply_mode`.

    The network trainer: SGD with momentum and weight decay over every trainable parameter of
    ``net`` (not the centers; not the class head in center mode), stepped with ``step(1)`` (the
    loss is already divided by N). ``clip_gradient`` clips each element of the network's
    gradients (None: no clipping). With ``lr_scheduler`` the schedule alone sets the learning
    rate (``lr`` is then unused). The center trainer: :func:`make_center_trainer`, None when
    the centers do not train. ``kvstore``: MXNet's name ('device', 'local'), or the
    :class:`~gluon_ssdcl.engine.distributed.Workers` of a distributed job, whose store sums both
    trainers' gradients over the workers (at keys of their own).

    Returns
    -------
    (gluon.Trainer, gluon.Trainer or None)
    """
    mode = Mode(mode)
    apply_mode(net, center_loss, mode)
    trainable = {name: param for name, param in net.collect_params().items()
                 if param.grad_req != 'null'}
    # learning_rate beside lr_scheduler makes MXNet print a warning on stdout
    optimizer_params = ({'learning_rate': lr} if lr_scheduler is None else
                        {'lr_scheduler': lr_scheduler})
    optimizer_params.update(momentum=momentum, wd=wd)
    if clip_gradient:
        optimizer_params['clip_gradient'] = clip_gradient
    stores = ((kvstore.trainer_store(), kvstore.trainer_store())
              if isinstance(kvstore, Workers) else (kvstore, kvstore))
    net_trainer = gluon.Trainer(trainable, 'sgd', optimizer_params, kvstore=stores[0])
    if not mode.trains_centers:
        return net_trainer, None
    return net_trainer, make_center_trainer(center_loss, alpha, lmbd, stores[1])


def make_center_trainer(center_loss, alpha, lmbd, kvstore='device'):
    """Plain SGD over the centers (no momentum, no weight decay): the one place of the
    λ / N / α bookkeeping.

    The loss holds the center term as ``λ L_center / N``, ``N`` being what the other terms are
    divided by: the positive anchors of the mini-batch (SSD,
    :class:`~gluon_ssdcl.losses.multibox.LossTerms`
    ``num_pos``) or its samples (LeNet). Like SSD's own terms, and like the reference MXNet
    center loss (its ``trainer.step(batch_size)``), the center term is divided by ``N``: without
    it λ = 1 weighs it about N times more than the softmax, and the softmax stops separating the
    classes (measured). The gradient of a center ``c_j`` is then
    ``(λ / N) n_j (c_j - mean of class j) / n_j``; this trainer's ``rescale_grad = 1 / λ`` and
    :func:`step_trainers`' ``step(1 / N)`` cancel λ and N, so each step moves every center
    present in the batch to ``c_j - α (c_j - mean of its class's embeddings)`` (Wen et al.,
    2016), whatever λ, N and the number of devices.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha (the center update rate) must be in (0, 1], got {alpha}")
    if not lmbd > 0:
        raise ValueError(f"lmbd (the center-loss weight) must be > 0, got {lmbd}")
    return gluon.Trainer(
        center_loss.collect_params(), 'sgd',
        {'learning_rate': alpha, 'momentum': 0.0, 'wd': 0.0, 'rescale_grad': 1.0 / lmbd},
        kvstore=kvstore)


def step_trainers(net_trainer, center_trainer, num_pos):
    """One update after ``backward``: the network with ``step(1)``, the centers (when trained)
    with ``step(1 / N)``, ``N = max(1, num_pos)`` (see :func:`make_center_trainer`)."""
    net_trainer.step(1)
    if center_trainer is not None:
        center_trainer.step(1.0 / max(1.0, float(num_pos)))


def make_lr_scheduler(lr, epochs, iters_per_epoch, lr_mode='cosine', lr_decay=0.1,
                      lr_decay_epoch=(), warmup_iters=0):
    """GluonCV's schedule: linear warm-up, then cosine to 0 or steps of ``lr_decay`` at
    ``lr_decay_epoch`` (counted from the start of training, warm-up included). A warm-up longer
    than half the run is shortened to half, with a logged note."""
    total = epochs * iters_per_epoch
    if warmup_iters > total // 2:
        logger.info("warm-up of %d iterations is longer than half of the run's %d: shortened to "
                    "%d, the learning rate %g reached at iteration %d", warmup_iters, total,
                    total // 2, lr, total // 2)
        warmup_iters = total // 2
    main = LRScheduler(lr_mode, base_lr=lr, niters=max(total - warmup_iters, 2),
                       step_factor=lr_decay,
                       step_iter=[e * iters_per_epoch - warmup_iters for e in lr_decay_epoch])
    warmup = [LRScheduler('linear', base_lr=0, target_lr=lr, niters=warmup_iters)]
    return LRSequential(warmup + [main] if warmup_iters > 0 else [main])


def set_seed(seed):
    """Seed Python's, NumPy's and MXNet's generators (data order, augmentation, init)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    mx.random.seed(seed % 2**31)


class NonFiniteError(FloatingPointError):
    """A loss, or the weights after an update, became NaN or infinite.

    Raised before anything is saved: the files on disk are those of the last finite epoch.
    """

    def __init__(self, epoch, batch, what):
        super().__init__(f"non-finite {what} at epoch {epoch}, batch {batch}: training stopped, "
                         "the files on disk are from the last finite epoch. Lower the learning "
                         "rate (--lr) or λ (--lmbd), or clip the gradients (--clip-gradient).")
        self.epoch, self.batch = epoch, batch


def check_finite(values, names, epoch, batch):
    """Raise :class:`NonFiniteError` unless every loss value is finite."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        values = ', '.join(f'{name}={value:.4g}' for name, value in zip(names, values))
        raise NonFiniteError(epoch, batch, f"loss ({values})")


def weights_finite_flag(blocks):
    """(1,) array on the CPU: the sum of the squares of every parameter and BatchNorm statistic
    of ``blocks``, finite exactly when they all are (or so large, above ~1e19, that their
    squares overflow: a diverged run), computed without a host synchronisation with one
    ``multi_sum_sq`` per device."""
    by_device = {}
    for block in blocks:
        for param in block.collect_params().values():
            for array in param.list_data():
                by_device.setdefault(array.context, []).append(array)
    return mx.nd.add_n(*[mx.nd.multi_sum_sq(*arrays, num_arrays=len(arrays)).sum()
                         .as_in_context(mx.cpu()) for arrays in by_device.values()])


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit` (the CLI maps its flags onto these fields)."""
    mode: Mode = Mode.SOFTMAX
    epochs: int = 10
    lr: float = 0.04
    lr_mode: str = 'cosine'
    lr_decay: float = 0.1
    lr_decay_epoch: Sequence[int] = ()
    warmup_iters: int = 100
    momentum: float = 0.9
    wd: float = 5e-4
    lmbd: float = 1.0
    alpha: float = 0.5
    clip_gradient: Optional[float] = None
    seed: int = 0
    val_interval: int = 1
    save_interval: int = 0
    log_interval: int = 0
    save_prefix: str = 'ssd_center'
    kvstore: str = 'device'
    meta: dict = field(default_factory=dict)


LOSS_NAMES = ('loss', 'cls', 'box', 'center')


def _to_host(terms, weights_flag):
    """One host synchronisation: the (4,) sums of total, cls, box, center over the batch and
    devices, N, and the value of ``weights_flag`` (the previous update's; 0 when None)."""
    parts = [mx.nd.add_n(*[t.sum().as_in_context(mx.cpu()) for t in term])
             for term in terms[:4]]
    flag = mx.nd.zeros((1,)) if weights_flag is None else weights_flag
    values = mx.nd.concat(*parts, terms.num_pos[0].as_in_context(mx.cpu()), flag,
                          dim=0).asnumpy()
    return values[:4], values[4], values[5]


def _check_weights(flag, epoch, batch):
    if not np.isfinite(flag):
        raise NonFiniteError(epoch, batch, "weights after the update")


def train_epoch(net, loss_fn, net_trainer, center_trainer, loader, ctx, epoch, log_interval=0):
    """One pass over ``loader`` (batches ``img (B,3,H,W), cls_targets (B,N), box_targets
    (B,N,4)``), split over ``ctx``. Returns the mean (total, cls, box, center) per image and
    images/s.

    A progress bar is shown on a terminal (:func:`~gluon_ssdcl.utils.progress.progress`);
    every ``log_interval`` batches (0: never) a line logs the epoch's mean losses so far, its
    images/s and the learning rate, as GluonCV's ``train_ssd.py --log-interval`` does.

    Raises :class:`NonFiniteError` before an update with a non-finite loss, and, at the next
    batch or the end of the epoch, after an update that left a non-finite weight.
    """
    sums, images, start = np.zeros(4), 0, time.time()
    blocks, weights_flag = (net, loss_fn.center_loss), None
    bar = progress(loader, desc=f'epoch {epoch}', leave=False, dynamic_ncols=True)
    for batch_index, batch in enumerate(bar):
        data, cls_targets, box_targets = [
            gluon.utils.split_and_load(part, ctx, even_split=False) for part in batch]
        with autograd.record():
            outputs = [net(x) for x in data]
            terms = loss_fn([o[0] for o in outputs], [o[1] for o in outputs], cls_targets,
                            box_targets, [o[3] for o in outputs])
        autograd.backward(terms.total)
        values, num_pos, previous_flag = _to_host(terms, weights_flag)
        _check_weights(previous_flag, epoch, batch_index - 1)
        check_finite(values, LOSS_NAMES, epoch, batch_index)
        step_trainers(net_trainer, center_trainer, num_pos)
        weights_flag = weights_finite_flag(blocks)
        sums += values
        images += batch[0].shape[0]
        bar.set_postfix(loss=f'{sums[0] / images:.3f}', lr=f'{net_trainer.learning_rate:.4f}')
        if log_interval and (batch_index + 1) % log_interval == 0:
            means = sums / images
            logger.info("[Epoch %d][Batch %d] cls=%.4f box=%.4f center=%.4f %.1f img/s "
                        "lr=%.5f", epoch, batch_index, means[1], means[2], means[3],
                        images / (time.time() - start), net_trainer.learning_rate)
    if weights_flag is not None:
        _check_weights(weights_flag.asscalar(), epoch, batch_index)
    return sums / max(images, 1), images / (time.time() - start)


def _checkpoint_meta(config, epoch, state):
    start = {} if state['start_map'] is None else {'start_map': state['start_map']}
    return {**config.meta, 'mode': Mode(config.mode).value, 'epoch': epoch,
            'epochs': config.epochs, 'best_map': state['best_map'], 'seed': config.seed,
            'history': state['history'], **start}


def _start(net, loss_fn, train_loader, ctx, config, resume, init_from, workers):
    """The trainers, the first epoch and the meta of the resumed checkpoint ({} for a new run)."""
    if not len(train_loader):
        raise ValueError("the training loader yields no batch: no epoch can train")
    mode = Mode(config.mode)
    if mode is Mode.CENTER and not (resume or init_from):
        logger.warning("center-only mode from scratch: the class predictors stay random; "
                       "start it from a softmax-center checkpoint with --init-from")
    if init_from:
        restore(load_checkpoint(init_from), net, loss_fn.center_loss, ctx=ctx)
        logger.info("initialised network and centers from %s", init_from)
    scheduler = make_lr_scheduler(config.lr, config.epochs, len(train_loader), config.lr_mode,
                                  config.lr_decay, config.lr_decay_epoch, config.warmup_iters)
    trainers = make_trainers(
        net, loss_fn.center_loss, mode, config.lr, config.momentum, config.wd, config.alpha,
        config.lmbd, lr_scheduler=scheduler, clip_gradient=config.clip_gradient,
        kvstore=workers or config.kvstore)
    if not resume:
        return trainers, 0, {}
    checkpoint = load_checkpoint(resume)
    restore(checkpoint, net, loss_fn.center_loss, *trainers, ctx=ctx)
    # the restored optimizer carries the schedule it was started with; the schedule depends on
    # the update count only, so this one continues it (and stretches it to new --epochs)
    trainers[0].optimizer.lr_scheduler = scheduler
    started_for = checkpoint.meta.get('epochs', config.epochs)
    if started_for != config.epochs:
        logger.info("the schedule now runs over %d epochs (the checkpoint was started for %d)",
                    config.epochs, started_for)
    return trainers, checkpoint.meta['epoch'] + 1, checkpoint.meta


def _save(config, epoch, record, state, net, loss_fn, trainers):
    """Write the checkpoints of an epoch; ``state`` ({'best_map', 'history'}) gets the new best.

    ``_last``, whose state a resumed run starts from, is written last: a run killed before it
    is complete resumes at this epoch and writes the others again (``_best`` included).
    """
    is_best = record.get('map', -1.0) > state['best_map']
    state['best_map'] = max(state['best_map'], record.get('map', -1.0))
    meta = _checkpoint_meta(config, epoch, state)
    paths = [f'{config.save_prefix}_best.params'] if is_best else []
    if config.save_interval and (epoch + 1) % config.save_interval == 0:
        paths.append(f'{config.save_prefix}_{epoch:04d}.params')
    paths.append(f'{config.save_prefix}_last.params')
    for path in paths:
        save_checkpoint(path, net, loss_fn.center_loss, meta, *trainers)


def _validate_start(config, validate, state, net, loss_fn, trainers):
    """Validate the network a run starts from (``validate(net, -1)``), log its mAP as epoch
    "start" and save it as the first ``<save_prefix>_best.params``, which only an epoch that
    scores higher replaces (``state``: best and starting mAP, history)."""
    net.hybridize(static_alloc=True, static_shape=True)
    state['start_map'] = state['best_map'] = float(validate(net, -1))
    logger.info("[Epoch start] mAP=%.4f", state['start_map'])
    save_checkpoint(f'{config.save_prefix}_best.params', net, loss_fn.center_loss,
                    _checkpoint_meta(config, -1, state), *trainers)


def _finish_epoch(config, epoch, means, speed, trainers, validate, state, net, loss_fn):
    """Validate when due, log the epoch and save its checkpoints (``state``: best mAP, history)."""
    record = {'epoch': epoch, **dict(zip(LOSS_NAMES, means)),
              'speed': speed, 'lr': trainers[0].learning_rate}
    if validate is not None and ((epoch + 1) % config.val_interval == 0
                                 or epoch + 1 == config.epochs):
        net.hybridize(static_alloc=True, static_shape=True)
        record['map'] = float(validate(net, epoch))
    state['history'].append(record)
    logger.info("[Epoch %d] cls=%.4f box=%.4f center=%.4f %.1f img/s lr=%.5f%s", epoch,
                record['cls'], record['box'], record['center'], speed, record['lr'],
                f" mAP={record['map']:.4f}" if 'map' in record else '')
    _save(config, epoch, record, state, net, loss_fn, trainers)


def fit(net, loss_fn, train_loader, ctx, config, validate: Optional[Callable] = None,
        resume: Optional[str] = None, init_from: Optional[str] = None,
        start_epoch: Optional[int] = None, workers: Optional[Workers] = None):
    """Train ``net`` with ``loss_fn`` (a :class:`MultiBoxCenterLoss`) for ``config.epochs``.

    Parameters
    ----------
    net : SSDCenter
        Initialised (see :func:`~gluon_ssdcl.model.initialize_params`) on ``ctx``.
    loss_fn : MultiBoxCenterLoss
        Initialised on ``ctx``; its mode must be ``config.mode``.
    train_loader : DataLoader
        Training batches (see :func:`gluon_ssdcl.data.datasets.get_dataloader`); each epoch's
        order must depend only on NumPy's generator (seeded per epoch), so that a resumed run
        repeats the uninterrupted one.
    ctx : list of mx.Context
    config : TrainConfig
    validate : callable, optional
        ``validate(net, epoch) -> mAP`` run every ``config.val_interval`` epochs and after the
        last, and with ``init_from`` before the first step (epoch -1); the best mAP decides
        ``<save_prefix>_best.params``.
    resume : str, optional
        A checkpoint file to continue from (network, centers, trainers, epoch, best mAP); the
        learning-rate schedule is ``config``'s, continued from the restored update count.
    init_from : str, optional
        A checkpoint whose network and centers start a new stage (e.g. center mode) or a
        fine-tuning run. With ``validate``, the starting network is validated and saved as the
        first ``_best.params``: an epoch replaces it only by scoring higher, and a warning says
        when none did.
    start_epoch : int, optional
        Epoch to start at (default: 0, or the one after the ``resume`` checkpoint).
    workers : Workers, optional
        This worker of a distributed job (:mod:`gluon_ssdcl.engine.distributed`): ``train_loader``
        yields its shard, ``loss_fn`` sums its counts over the workers, the trainers use its
        store (``config.kvstore`` is then unused). After each epoch the BatchNorm statistics
        are averaged over the workers; rank 0 alone validates, logs and saves, while the others
        wait for it. ``resume`` and ``init_from`` are read by every worker (a shared folder).

    Returns
    -------
    dict with 'epoch', 'best_map', 'start_map' (the starting network's mAP, None without
    ``init_from``), 'history' and 'checkpoint' (last path). The history, one
    dict per epoch (``epoch, loss, cls, box, center, speed, lr`` and ``map`` when validated),
    also goes into every checkpoint's meta, and continues across ``resume``.

    Raises
    ------
    NonFiniteError
        When a loss or the weights become NaN or infinite; nothing of that epoch is saved.
    """
    trainers, first_epoch, meta = _start(net, loss_fn, train_loader, ctx, config, resume,
                                         init_from, workers)
    leader = workers is None or workers.rank == 0
    first_epoch = first_epoch if start_epoch is None else start_epoch
    state = {'best_map': meta.get('best_map', -1.0), 'start_map': meta.get('start_map'),
             'history': [record for record in meta.get('history', [])
                         if record['epoch'] < first_epoch]}
    if resume and leader:
        logger.info("resumed from %s at epoch %d", resume, first_epoch)
    if init_from and validate is not None:
        if leader:
            _validate_start(config, validate, state, net, loss_fn, trainers)
        if workers is not None:
            workers.barrier()
    for epoch in range(first_epoch, config.epochs):
        set_seed(config.seed * 100003 + epoch)
        net.hybridize(static_alloc=True, static_shape=True)
        loss_fn.hybridize()
        means, speed = train_epoch(net, loss_fn, *trainers, train_loader, ctx, epoch,
                                   config.log_interval if leader else 0)
        if workers is not None:  # the job's mean losses and images/s; equal statistics
            workers.average_statistics([net])
            totals = workers.sum_numbers('epoch', [*means, speed])
            means, speed = totals[:-1] / workers.size, float(totals[-1])
        if leader:
            _finish_epoch(config, epoch, means, speed, trainers, validate, state, net, loss_fn)
        if workers is not None:
            workers.barrier()  # the others wait while rank 0 validates and saves
    if leader and state['start_map'] is not None and state['best_map'] <= state['start_map']:
        logger.warning("no epoch beat the starting model's mAP %.4f (the best epoch scored "
                       "%.4f): %s_best.params keeps the starting weights, %s_last.params has "
                       "the trained ones", state['start_map'],
                       max((record.get('map', -1.0) for record in state['history']),
                           default=-1.0),
                       config.save_prefix, config.save_prefix)
    return {'epoch': config.epochs - 1, 'best_map': state['best_map'],
            'start_map': state['start_map'], 'history': state['history'],
            'checkpoint': f'{config.save_prefix}_last.params'}
