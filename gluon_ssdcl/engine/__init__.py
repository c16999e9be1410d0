"""Training: the loop and its trainers, checkpoints, and data-parallel workers."""
from .checkpoint import (Checkpoint, LoadedModel, load_checkpoint, load_model, restore,
                         save_checkpoint)
from .distributed import Workers
from .train import NonFiniteError, TrainConfig, fit, make_trainers

__all__ = ['Checkpoint', 'LoadedModel', 'load_checkpoint', 'load_model', 'restore',
           'save_checkpoint', 'Workers', 'NonFiniteError', 'TrainConfig', 'fit', 'make_trainers']
