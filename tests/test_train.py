import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd

from gluon_ssdcl import CenterLoss, Mode, MultiBoxCenterLoss
from gluon_ssdcl.train import make_center_trainer, make_trainers


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
    embed_params = set(net.embedding_predictors.collect_params())
    centers = set(loss_fn.center_loss.collect_params())
    assert (class_params <= trained) == mode.trains_classifier
    assert (embed_params <= trained) == mode.uses_center
    assert (centers <= trained) == mode.uses_center
    assert not centers & {p.name for p in net_trainer._params}  # never under momentum/wd
    frozen_before = {n: every[n].data().asnumpy().copy() for n in every if n not in trained}
    net_trainer.step(1)
    if center_trainer is not None:
        center_trainer.step(1)
    for name, value in frozen_before.items():
        np.testing.assert_array_equal(every[name].data().asnumpy(), value)
