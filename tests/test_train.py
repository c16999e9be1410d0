import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from gluon_ssdcl import CenterLoss, Mode, MultiBoxCenterLoss
from gluon_ssdcl.engine.train import make_center_trainer, make_trainers


@pytest.mark.parametrize('lmbd', [0.1, 1.0, 10.0])
def test_center_step_moves_centers_towards_class_means(lmbd):
    alpha = 0.5
    rng = np.random.RandomState(0)
    block = CenterLoss(4, 3)
    block.initialize(mx.init.Normal(1.0))
    trainer = make_center_trainer(block, alpha, lmbd)
    x = rng.randn(7, 3)
    labels = np.array([0, 0, 0, 2, 2, 3, 0])  # class 1 missing
    before = block.centers.weight.data().asnumpy().copy()
    with autograd.record():
        loss = lmbd * block(nd.array(x), nd.array(labels)).sum()
    loss.backward()
    trainer.step(1)
    after = block.centers.weight.data().asnumpy()
    for j in range(4):
        members = x[labels == j]
        want = before[j] if len(members) == 0 else before[j] - alpha * (before[j] - members.mean(0))
        np.testing.assert_allclose(after[j], want, rtol=1e-5, atol=1e-6)


def test_clip_gradient_reaches_the_network_optimizer_only(tiny_net):
    block = CenterLoss(3, 2)
    block.initialize()
    net_trainer, center_trainer = make_trainers(tiny_net, block, 'softmax-center', lr=0.1,
                                                clip_gradient=1.0)
    assert net_trainer.optimizer.clip_gradient == 1.0
    assert center_trainer.optimizer.clip_gradient is None


@pytest.mark.parametrize('kwargs', [{'alpha': 0.0}, {'alpha': 1.5}, {'lmbd': -1.0}])
def test_center_trainer_rejects_bad_rates(kwargs):
    block = CenterLoss(2, 2)
    block.initialize()
    with pytest.raises(ValueError):
        make_center_trainer(block, **{'alpha': 0.5, 'lmbd': 1.0, **kwargs})




@pytest.mark.parametrize('mode', list(Mode))
def test_every_trained_parameter_gets_a_gradient_and_frozen_ones_none(tiny_net, mode):
    net = tiny_net
    loss_fn = MultiBoxCenterLoss(len(net.classes), net.embed_dim, mode=mode)
    loss_fn.initialize(mx.init.Normal(1.0))
    net_trainer, center_trainer = make_trainers(net, loss_fn.center_loss, mode, lr=0.1)
    x = nd.random.uniform(shape=(2, 3, 64, 64))
    with autograd.train_mode():
        num_anchors = net(x)[0].shape[1]
    rng = np.random.RandomState(0)
    cls_target = nd.array(rng.choice([-1, 0, 0, 1, 2, 3], size=(2, num_anchors)))
    box_target = nd.array(rng.randn(2, num_anchors, 4))
    with autograd.record():
        outputs = net(x)
        terms = loss_fn(outputs[0], outputs[1], cls_target, box_target, *outputs[3:])
    autograd.backward(terms.total)

    trained = {p.name for p in net_trainer._params}
    if center_trainer is not None:
        trained |= {p.name for p in center_trainer._params}
    every = {**net.collect_params(), **loss_fn.center_loss.collect_params()}
    for name, param in every.items():
        if name in trained:
            assert np.abs(param.grad().asnumpy()).sum() > 0, name
        else:
            assert param.grad_req == 'null', name
    mode = Mode(mode)
    class_params = set(net.class_predictors.collect_params())
    embed_params = {name for conv, _ in net.embedding_predictors
                    for name in conv.collect_params()}
    centers = set(loss_fn.center_loss.collect_params())
    assert (class_params <= trained) == mode.trains_class_head == (mode is not Mode.CENTER)
    assert embed_params <= trained  # the embeddings feed the class predictors in every mode
    assert (centers <= trained) == mode.trains_centers == (mode is Mode.SOFTMAX_CENTER)
    assert not centers & {p.name for p in net_trainer._params}  # never under momentum/wd
    frozen_before = {n: every[n].data().asnumpy().copy() for n in every if n not in trained}
    net_trainer.step(1)
    if center_trainer is not None:
        center_trainer.step(1)
    for name, value in frozen_before.items():
        np.testing.assert_array_equal(every[name].data().asnumpy(), value)


@pytest.mark.parametrize('mode', list(Mode))
def test_ssd_and_lenet_freeze_the_same_parts_in_each_mode(tiny_net, mode):
    from gluon_ssdcl.experiments.lenet import LeNetPlusPlus
    lenet = LeNetPlusPlus(3, 2)
    lenet.initialize()
    frozen = {}
    for name, net in (('ssd', tiny_net), ('lenet', lenet)):
        center_loss = CenterLoss(3, 2)
        center_loss.initialize()
        _, center_trainer = make_trainers(net, center_loss, mode, lr=0.1)
        class_head = {p.grad_req for p in net.class_head.collect_params().values()}
        frozen[name] = (class_head, center_loss.centers.weight.grad_req, center_trainer is None)
    want_centers = mode is Mode.SOFTMAX_CENTER  # center mode keeps the first stage's centers
    assert frozen['ssd'] == frozen['lenet'] == (
        {'null'} if mode is Mode.CENTER else {'write'},
        'write' if want_centers else 'null', not want_centers)


# ---------------------------------------------------------------- the loop and its checkpoints

def toy_dataset(num_images, seed):
    """64-px noise images, each with one or two filled rectangles of class 0, 1 or 2."""
    rng = np.random.RandomState(seed)
    items = []
    for _ in range(num_images):
        img = rng.randint(0, 60, size=(64, 64, 3)).astype(np.uint8)
        boxes = []
        for _ in range(rng.randint(1, 3)):
            x0, y0 = rng.randint(0, 36, size=2)
            w, h = rng.randint(14, 28, size=2)
            cls = rng.randint(0, 3)
            img[y0:y0 + h, x0:x0 + w] = 80 + 80 * cls
            boxes.append([x0, y0, min(x0 + w, 63), min(y0 + h, 63), cls, 0])
        items.append((nd.array(img, dtype='uint8'), np.array(boxes, dtype=np.float32)))
    return mx.gluon.data.SimpleDataset(items)


def build_run(mode, seed=0):
    """A fresh tiny net, loss and training loader, identically initialised for a seed."""
    from gluon_ssdcl import get_model, initialize_params
    from gluon_ssdcl.data.datasets import get_dataloader
    from gluon_ssdcl.engine.train import set_seed
    set_seed(seed)
    net = get_model('ssd_64_tiny_center_custom', classes=['a', 'b', 'c'], embed_dim=2)
    initialize_params(net, [mx.cpu()])
    anchors = net.anchor_outputs(nd.zeros((1, 3, 64, 64)))[2]
    loader, _ = get_dataloader(toy_dataset(12, seed=1), toy_dataset(4, seed=2), 64, 64, anchors,
                               batch_size=4, num_workers=0)
    loss_fn = MultiBoxCenterLoss(3, 2, mode=mode)
    loss_fn.initialize(mx.init.Normal(1.0))
    return net, loss_fn, loader


def config_for(tmp_path, name, mode='softmax-center', epochs=2, **kwargs):
    from gluon_ssdcl.engine.train import TrainConfig
    return TrainConfig(mode=Mode(mode), epochs=epochs, lr=0.01, warmup_iters=2,
                       save_prefix=str(tmp_path / name),
                       meta={'network': 'ssd_64_tiny_center_custom', 'classes': ['a', 'b', 'c'],
                             'embed_dim': 2}, **kwargs)


class StopAfter:
    """A loader that raises KeyboardInterrupt (a killed run) after ``limit`` batches in all."""

    def __init__(self, loader, limit):
        self.loader, self.limit, self.seen = loader, limit, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if self.seen == self.limit:
                raise KeyboardInterrupt
            self.seen += 1
            yield batch


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    from gluon_ssdcl.engine.checkpoint import load_checkpoint
    from gluon_ssdcl.engine.train import fit
    net, loss_fn, loader = build_run('softmax-center')
    fit(net, loss_fn, loader, [mx.cpu()], config_for(tmp_path, 'straight'))

    net, loss_fn, loader = build_run('softmax-center')
    with pytest.raises(KeyboardInterrupt):  # killed in the middle of the second epoch
        fit(net, loss_fn, StopAfter(loader, len(loader) + 1), [mx.cpu()],
            config_for(tmp_path, 'killed'))
    assert load_checkpoint(str(tmp_path / 'killed_last.params')).meta['epoch'] == 0
    net, loss_fn, loader = build_run('softmax-center', seed=0)
    fit(net, loss_fn, loader, [mx.cpu()], config_for(tmp_path, 'killed'),
        resume=str(tmp_path / 'killed_last.params'))

    straight = load_checkpoint(str(tmp_path / 'straight_last.params'))
    resumed = load_checkpoint(str(tmp_path / 'killed_last.params'))
    assert resumed.meta['epoch'] == straight.meta['epoch'] == 1
    assert straight.net_params.keys() == resumed.net_params.keys()
    for name, value in straight.net_params.items():
        np.testing.assert_allclose(resumed.net_params[name].asnumpy(), value.asnumpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(resumed.centers.asnumpy(), straight.centers.asnumpy(), rtol=1e-5)
    assert [r['epoch'] for r in resumed.meta['history']] == [0, 1]
    for want, got in zip(straight.meta['history'], resumed.meta['history']):
        np.testing.assert_allclose([got[k] for k in ('loss', 'cls', 'box', 'center')],
                                   [want[k] for k in ('loss', 'cls', 'box', 'center')], rtol=1e-5)


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    from gluon_ssdcl.engine.checkpoint import load_checkpoint, save_checkpoint
    net, loss_fn, _ = build_run('softmax-center')
    path = str(tmp_path / 'run_last.params')
    save_checkpoint(path, net, loss_fn.center_loss, {'epoch': 0})
    before = load_checkpoint(path)
    net.class_predictors[0].weight.set_data(net.class_predictors[0].weight.data() + 1)

    def rename_never_happens(src, dst):
        raise OSError('killed before the rename')
    monkeypatch.setattr('os.replace', rename_never_happens)
    with pytest.raises(OSError):
        save_checkpoint(path, net, loss_fn.center_loss, {'epoch': 1})
    monkeypatch.undo()
    after = load_checkpoint(path)
    assert after.meta == {'epoch': 0}
    for name, value in before.net_params.items():
        np.testing.assert_array_equal(after.net_params[name].asnumpy(), value.asnumpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run_last.params', 'run_last.state']


class NaNOnCall(MultiBoxCenterLoss):
    """MultiBoxCenterLoss whose ``call``-th evaluation returns NaN."""
    call = 5

    def forward(self, *args):
        self.calls = getattr(self, 'calls', 0) + 1
        terms = super().forward(*args)
        if self.calls == self.call:
            return terms._replace(total=[t * np.nan for t in terms.total])
        return terms


def test_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    from gluon_ssdcl.engine.checkpoint import load_checkpoint
    from gluon_ssdcl.engine.train import NonFiniteError, fit
    net, _, loader = build_run('softmax-center')
    loss_fn = NaNOnCall(3, 2, mode='softmax-center')
    loss_fn.initialize(mx.init.Normal(1.0))
    assert len(loader) == 3  # so the 5th batch is epoch 1, batch 1
    with pytest.raises(NonFiniteError, match='loss .* at epoch 1, batch 1'):
        fit(net, loss_fn, loader, [mx.cpu()], config_for(tmp_path, 'nan', epochs=3))
    checkpoint = load_checkpoint(str(tmp_path / 'nan_last.params'))
    assert checkpoint.meta['epoch'] == 0
    assert all(np.all(np.isfinite(v.asnumpy())) for v in checkpoint.net_params.values())


def test_center_only_stage_keeps_the_class_predictors(tmp_path):
    from gluon_ssdcl.engine.checkpoint import load_checkpoint
    from gluon_ssdcl.engine.train import fit
    net, loss_fn, loader = build_run('softmax-center')
    fit(net, loss_fn, loader, [mx.cpu()], config_for(tmp_path, 'stage1', epochs=1))
    net, loss_fn, loader = build_run('center', seed=5)
    fit(net, loss_fn, loader, [mx.cpu()], config_for(tmp_path, 'stage2', mode='center',
                                                     epochs=1),
        init_from=str(tmp_path / 'stage1_last.params'))
    first = load_checkpoint(str(tmp_path / 'stage1_last.params'))
    second = load_checkpoint(str(tmp_path / 'stage2_last.params'))
    class_keys = [k for k in first.net_params if k.startswith('class_predictors')]
    box_keys = [k for k in first.net_params if k.startswith('box_predictors')]
    assert class_keys and box_keys
    for key in class_keys:
        np.testing.assert_array_equal(second.net_params[key].asnumpy(),
                                      first.net_params[key].asnumpy())
    assert any(np.any(second.net_params[k].asnumpy() != first.net_params[k].asnumpy())
               for k in box_keys)
    assert second.meta['mode'] == 'center'


class PoisonOnCall(MultiBoxCenterLoss):
    """MultiBoxCenterLoss whose ``call``-th evaluation has its true value but an infinite
    gradient, so that the update leaves non-finite weights while every loss stays finite."""
    call = 6

    def forward(self, *args):
        self.calls = getattr(self, 'calls', 0) + 1
        terms = super().forward(*args)
        if self.calls == self.call:  # (t - t) is 0 forward; its gradient is scaled by inf
            return terms._replace(total=[t + (t - t.detach()) * 3e38 * 3e38 for t in terms.total])
        return terms


def test_an_update_that_poisons_the_weights_in_the_last_batch_is_never_saved(tmp_path):
    from gluon_ssdcl.engine.checkpoint import load_checkpoint
    from gluon_ssdcl.engine.train import NonFiniteError, fit
    net, _, loader = build_run('softmax-center')
    loss_fn = PoisonOnCall(3, 2, mode='softmax-center')
    loss_fn.initialize(mx.init.Normal(1.0))
    assert len(loader) == 3  # the 6th batch is the last of epoch 1
    with pytest.raises(NonFiniteError, match='weights after the update at epoch 1, batch 2'):
        fit(net, loss_fn, loader, [mx.cpu()], config_for(tmp_path, 'poison', epochs=3))
    checkpoint = load_checkpoint(str(tmp_path / 'poison_last.params'))  # refuses NaN files
    assert checkpoint.meta['epoch'] == 0


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    from gluon_ssdcl.engine.checkpoint import load_checkpoint, save_checkpoint
    net, loss_fn, _ = build_run('softmax')
    net.class_predictors[0].bias.set_data(net.class_predictors[0].bias.data() * np.nan)
    path = str(tmp_path / 'nan.params')
    save_checkpoint(path, net, loss_fn.center_loss, {'epoch': 0})
    with pytest.raises(ValueError, match='nan.params holds NaN or infinite values in 1 arrays'):
        load_checkpoint(path)


def test_a_run_killed_at_any_rename_of_a_save_resumes_with_the_right_best(tmp_path,
                                                                          monkeypatch):
    """Epoch 1 beats epoch 0: killed at each rename of its saves (_best then _last, three
    renames each), the run resumes to a _best of epoch 1 with its mAP, the weights of _last."""
    import shutil

    from test_checkpoint import Killed, killed_at

    from gluon_ssdcl.data.datasets import get_dataloader
    from gluon_ssdcl.engine.checkpoint import load_checkpoint
    from gluon_ssdcl.engine.train import fit
    from gluon_ssdcl.utils.files import file_sha256
    maps = {0: 0.25, 1: 0.5}
    net, loss_fn, _ = build_run('softmax-center')  # a resumed run restores all they hold
    loader, _ = get_dataloader(toy_dataset(4, seed=1), toy_dataset(1, seed=2), 64, 64,
                               net.anchor_outputs(nd.zeros((1, 3, 64, 64)))[2], batch_size=4,
                               num_workers=0, augment=False)

    def train(name, kill=None, resume=False):
        config = config_for(tmp_path, name)
        if kill:
            killed_at(monkeypatch, kill)
        try:
            fit(net, loss_fn, loader, [mx.cpu()], config, validate=lambda net, epoch: maps[epoch],
                resume=f'{config.save_prefix}_last.params' if resume else None)
        except Killed:
            return False
        finally:
            monkeypatch.undo()
        return True
    assert not train('base', kill=5)  # epoch 0 saved _best and _last with two renames each
    assert load_checkpoint(str(tmp_path / 'base_last.params')).meta['epoch'] == 0
    for kill in range(1, 7):
        name = f'killed{kill}'
        for suffix in ('_best.params', '_best.state', '_last.params', '_last.state'):
            shutil.copy(tmp_path / f'base{suffix}', tmp_path / f'{name}{suffix}')
        assert not train(name, kill=kill, resume=True)
        assert train(name, resume=True)
        best, last = (load_checkpoint(str(tmp_path / f'{name}_{which}.params'))
                      for which in ('best', 'last'))
        assert best.meta['epoch'] == last.meta['epoch'] == 1, kill
        assert best.meta['best_map'] == last.meta['best_map'] == 0.5, kill
        assert file_sha256(best.path) == file_sha256(last.path), kill
