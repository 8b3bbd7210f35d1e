"""bnlib.torch: batch normalisation in PyTorch, with the backward pass written by hand.

* :mod:`bnlib.torch.functional`: ``BatchNormFunction`` (chapter 3's compact
  backward as a ``torch.autograd.Function``), ``batch_norm`` (semantics of
  ``torch.nn.functional.batch_norm``), ``batch_norm_train`` (returns the batch
  statistics too), ``LayerNormFunction`` and ``layer_norm`` (chapter 6).
* :mod:`bnlib.torch.modules`: ``BatchNorm1d``, ``BatchNorm2d`` and ``LayerNorm``,
  drop-in replacements for their ``torch.nn`` namesakes (chapters 5 and 8).
* :mod:`bnlib.torch.deploy`: ``fold_batchnorm``, ``recompute_bn_stats``,
  ``bn_layers_in_training_mode``, ``freeze_bn_stats`` / ``FrozenBatchNorm`` and
  ``bn_eval_mode`` (chapter 5: batch norm at inference time).
* :mod:`bnlib.torch.variants`: ``NoisyBatchNorm1d`` and ``LpBatchNorm1d``
  (chapter 7: noisy batch norm and Lp normalisations, Santurkar et al. 2018).
* :mod:`bnlib.torch.distributed`: ``SyncBatchNorm``, ``SyncBatchNormFunction`` and ``convert_sync_batchnorm`` (chapter 8: batch norm across devices with ``torch.distributed``).

Importing this package imports PyTorch; ``import bnlib`` alone does not.
"""
from bnlib.torch.functional import BatchNormFunction, LayerNormFunction, batch_norm, batch_norm_train, layer_norm
from bnlib.torch.modules import BatchNorm1d, BatchNorm2d, LayerNorm
from bnlib.torch.deploy import (FrozenBatchNorm, bn_eval_mode, bn_layers_in_training_mode,
                                fold_batchnorm, freeze_bn_stats, recompute_bn_stats)
from bnlib.torch.variants import LpBatchNorm1d, NoisyBatchNorm1d
from bnlib.torch.distributed import SyncBatchNorm, SyncBatchNormFunction, convert_sync_batchnorm
