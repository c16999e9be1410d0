import os

from gluon_ssdcl.utils.cpus import available_cpus  # imports nothing heavy: MXNet is not loaded yet

# MXNet uses half the cores when OMP_NUM_THREADS is unset; must be set before importing it.
os.environ.setdefault('OMP_NUM_THREADS', str(available_cpus()))

import mxnet as mx  # noqa: E402
import pytest  # noqa: E402

from gluon_ssdcl import get_model, initialize_params  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the training flags of a tiny run: the 64 px network, 2-D embeddings, data in this process
TINY = ['--network', 'tiny', '--data-shape', '64', '--batch-size', '8', '-j', '0',
        '--embed-dim', '2', '--warmup-iters', '2', '--knn-k', '1']


@pytest.fixture
def tiny_net():
    """An initialised 64-px SSDCenter with 3 classes and 2-D embeddings."""
    net = get_model('ssd_64_tiny_center_custom', classes=['a', 'b', 'c'], embed_dim=2)
    initialize_params(net, [mx.cpu()])
    return net


def tiny_digits(tmp_path_factory, num_train: int, num_val: int = 8) -> list:
    """Training flags naming a digits data set of ``num_train`` + ``num_val`` images made for
    the test module."""
    from gluon_ssdcl.data.digitset import ensure_digits  # pylint: disable=C0415
    root = ensure_digits(str(tmp_path_factory.mktemp('digits')), num_train=num_train,
                         num_val=num_val, progress=False)
    return ['--dataset-root', root, '--digits-train', str(num_train), '--digits-val',
            str(num_val)]
