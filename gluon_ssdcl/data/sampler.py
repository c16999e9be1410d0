"""Each worker's part of every global batch (data-parallel training, one process or many)."""
import mxnet as mx
import numpy as np

__all__ = ['ShardSampler']


class ShardSampler(mx.gluon.data.Sampler):
    """A worker's batches: each epoch a new order of ``length`` items from NumPy's generator (as
    gluon's ``RandomSampler``), cut into global batches of ``workers * batch_size`` (the last
    incomplete one left out); yields the ``rank``-th ``batch_size`` indices of each.

    Seeded the same, the workers cut the same order, so their shards are disjoint, and W
    workers see exactly the batches of one process with batch W·b. With one worker it yields
    what ``DataLoader(shuffle=True, last_batch='discard')`` does.
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, workers: int = 1):
        if not 0 <= rank < workers:
            raise ValueError(f"rank {rank} is not one of the {workers} workers")
        self.length, self.batch_size, self.rank, self.workers = length, batch_size, rank, workers

    def __iter__(self):
        order = np.arange(self.length)
        np.random.shuffle(order)
        step = self.batch_size * self.workers
        for start in range(0, len(self) * step, step):
            first = start + self.rank * self.batch_size
            yield order[first:first + self.batch_size].tolist()

    def __len__(self):
        return self.length // (self.batch_size * self.workers)
