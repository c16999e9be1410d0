"""Data-parallel training on MXNet's parameter server: what one worker adds to MXNet's own.

MXNet's distributed key-value store (ps-lite; ``kvstore='dist_sync'`` or ``'dist_device_sync'``)
does the work: the servers sum what the workers push, and every worker pulls the sum. Started by
``gluon-ssdcl launch`` (or any launcher that sets MXNet's ``DMLC_*`` environment), each
worker here

- trains on its own shard of each epoch's order (:class:`~gluon_ssdcl.data.sampler.ShardSampler`);
- sums N and the center loss's class histogram over all workers before normalising
  (:meth:`Workers.sum`, a push and pull of a small array on a key of its own), so one step of W
  workers with batch b each is one step of one process with batch W·b split over W devices;
- has its gradients summed by the servers, then updates its copy of the weights itself (the
  servers hold no optimizer: both trainers work as in one process, with the checkpointable
  states of :func:`~gluon_ssdcl.engine.train.make_trainers`), so all copies stay equal;
- averages the BatchNorm running statistics over the workers at the end of each epoch, as one
  process averages its devices' copies when it saves (:meth:`Workers.average_statistics`).

Keys of the store: this module's sums below ``KEY_BLOCK``, then a block of ``KEY_BLOCK`` keys
for each trainer (the network's, the centers'; a new pair for each run in the same job).
"""
import os
from typing import Dict, List, Sequence

import mxnet as mx
import numpy as np

__all__ = ['KVSTORES', 'DIST_KVSTORES', 'KEY_BLOCK', 'KeyRange', 'Workers']

DIST_KVSTORES = ('dist_sync', 'dist_device_sync')
KVSTORES = ('device', 'local') + DIST_KVSTORES
KEY_BLOCK = 1 << 20
STATISTICS = ('running_mean', 'running_var')  # BatchNorm's, not trained by a gradient


class KeyRange(mx.kv.KVStoreBase):
    """A ``gluon.Trainer``'s view of a store whose keys start at ``first``: two trainers share
    one store (and its servers) without sharing keys.

    It reports no optimizer capability, so the trainer updates its weights on the worker and
    the servers only sum. ``broadcast`` (the trainer's first step: every worker gets rank 0's
    weights) goes through plain copies, since the store cannot read or write weights that
    MKL-DNN holds in its own layout (after an inference forward and a ``load_parameters``,
    e.g. when resuming), and waits for the weights before returning: MXNet's CPU push may
    otherwise send the first gradients before that pull is served, and the worker would get
    their sum as weights.
    """

    def __init__(self, store, first: int):
        self.store, self.first = store, first

    def broadcast(self, key, value, out, priority=0):
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        plain = [mx.nd.array(a.asnumpy(), ctx=a.context, dtype=a.dtype) for a in [value] + out]
        self.store.broadcast(self.first + key, plain[0], plain[1:], priority)
        for array, pulled in zip(out, plain[1:]):
            array[:] = pulled
            array.wait_to_read()

    def pushpull(self, key, value, out=None, priority=0):
        self.store.pushpull(self.first + key, value, out, priority)

    def is_capable(self, capability):
        return False

    @property
    def type(self):
        return self.store.type

    @property
    def rank(self):
        return self.store.rank

    @property
    def num_workers(self):
        return self.store.num_workers

    def set_optimizer(self, optimizer):
        raise NotImplementedError("the workers update their weights: no optimizer on the servers")

    def save_optimizer_states(self, fname, dump_optimizer=False):
        raise NotImplementedError("the trainer holds the optimizer states")

    def load_optimizer_states(self, fname):
        raise NotImplementedError("the trainer holds the optimizer states")


class Workers:
    """This process's part in a data-parallel job on MXNet's parameter server.

    Parameters
    ----------
    kvstore : str
        'dist_sync' or 'dist_device_sync' (MXNet's; the second merges a worker's GPUs on a GPU).
        Connects to the job's scheduler named by the ``DMLC_*`` environment, waiting until every
        worker and server has joined.

    Attributes
    ----------
    rank : int
        0 .. size - 1: the worker's launch index ``DMLC_TASK_ID`` (set by
        ``gluon-ssdcl launch``, as by MXNet's own launcher), so the launcher's output labels
        name the same worker; ps-lite's own rank (ordered by address and port) when the
        workers' indices are missing or not 0 .. size - 1. Rank 0 validates and saves.
    size : int
        The number of workers, W.
    store : mxnet.kvstore.KVStore
    """

    def __init__(self, kvstore: str = 'dist_sync'):
        if kvstore not in DIST_KVSTORES:
            raise ValueError(f"a distributed store is one of {', '.join(DIST_KVSTORES)}, "
                             f"got {kvstore!r}")
        if os.environ.get('DMLC_ROLE') != 'worker':
            raise ValueError(f"--kvstore {kvstore} runs in a job started by "
                             "python -m gluon_ssdcl.launch -n WORKERS -- COMMAND (no DMLC_ROLE="
                             "worker in the environment)")
        self.store = mx.kv.create(kvstore)
        self.size = self.store.num_workers
        self._keys: Dict[tuple, int] = {}
        self._trainers = 0
        self.rank = self._launch_rank()

    def _launch_rank(self) -> int:
        """``DMLC_TASK_ID`` when the workers' ids are exactly 0 .. size - 1, else ps-lite's."""
        task = os.environ.get('DMLC_TASK_ID', '')
        claimed = int(task) if task.isdigit() and int(task) < self.size else None
        one_hot = np.zeros(self.size)
        if claimed is not None:
            one_hot[claimed] = 1
        every = self.sum_numbers('ranks', one_hot)
        return claimed if np.all(every == 1) else self.store.rank

    def trainer_store(self) -> KeyRange:
        """A store for one more ``gluon.Trainer``: a block of keys of its own (see
        :class:`KeyRange`); every worker makes its trainers in the same order."""
        self._trainers += 1
        return KeyRange(self.store, self._trainers * KEY_BLOCK)

    def _key(self, name: str, like) -> int:
        """The key of ``name`` for arrays like ``like``; the first use initialises it (all
        workers, in the same order)."""
        what = (name, like.shape, np.dtype(like.dtype).name)
        if what not in self._keys:
            self._keys[what] = len(self._keys)
            self.store.init(self._keys[what], mx.nd.zeros(like.shape, dtype=like.dtype))
        return self._keys[what]

    def sum(self, name: str, values: Sequence[mx.nd.NDArray]) -> List[mx.nd.NDArray]:
        """The sum over the worker's devices and all workers, one copy per device.

        Parameters
        ----------
        name : str
            What is summed (one key each, e.g. 'num_pos', 'histogram'); every worker sums the
            same names in the same order.
        values : list of NDArray
            One array of the same shape per device (they may be overwritten).

        Returns
        -------
        list of NDArray, in the devices of ``values``; no host synchronisation (the engine
        waits for the servers). Read the result before summing ``name`` again.
        """
        values = list(values)
        key = self._key(name, values[0])
        with mx.autograd.pause():
            out = [mx.nd.zeros(v.shape, ctx=v.context, dtype=v.dtype) for v in values]
        self.store.pushpull(key, values, out=out)
        return out

    def sum_numbers(self, name: str, values) -> np.ndarray:
        """:meth:`sum` of float64 numbers (one array of them per worker), waited for."""
        return self.sum(name, [mx.nd.array(values, dtype=np.float64)])[0].asnumpy()

    def barrier(self) -> None:
        """Return when every worker has called it (e.g. while rank 0 saves)."""
        self.sum_numbers('barrier', [0.0])

    def average_statistics(self, blocks) -> None:
        """Set the BatchNorm running statistics of ``blocks`` (and every device's copy) to
        their mean over all copies of all workers: the same on every worker, as one process
        averages its devices' copies when it saves."""
        for block in blocks:
            for name, param in sorted(block.collect_params().items()):
                if not name.endswith(STATISTICS):
                    continue
                arrays = param.list_data()
                sums = self.sum(f'statistics {name}', [a.copy() for a in arrays])
                for array, total in zip(arrays, sums):
                    (total / (self.size * len(arrays))).copyto(array)
