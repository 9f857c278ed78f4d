"""Where the random draws of a training step come from (dropout masks, augmentation).

Every draw uses a fresh generator keyed by (seed, iteration, stream), never a generator
carried from step to step: a run resumed from a checkpoint at any iteration draws the same
numbers as one never interrupted, with no generator state to save. Draws cover the whole
mini-batch sample by sample, and a shard takes its own samples' rows, so the numbers do not
depend on how many shards the batch was cut into either.
"""

from dataclasses import dataclass

import numpy as np

AUGMENTATION_STREAM = 0  # layer i draws from stream i + 1


@dataclass(frozen=True)
class StepNoise:
    """The key of one training step's draws, for the samples ``start:stop`` of a batch.

    ``outside_fit`` marks training-mode computations that are not steps of :func:`fit`
    (``loss_and_grads``, ``forward`` in training mode), counted by the network instead.
    """

    seed: int
    iteration: int
    start: int = 0
    stop: int = 0
    outside_fit: bool = False

    def rng(self, stream):
        return np.random.default_rng([int(self.outside_fit), self.seed, self.iteration, stream])

    @property
    def rows(self):
        return slice(self.start, self.stop)

    def shard(self, start, stop):
        return StepNoise(self.seed, self.iteration, start, stop, self.outside_fit)
