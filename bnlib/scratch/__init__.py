"""NumPy from scratch (chapters 1-7): normalisation layers with hand-written gradients.

Only NumPy is needed.  Float64 by default; examples along axis 0; features
(2-D input) or channels (4-D input, statistics over N, H, W) along axis 1.

* :mod:`.functional`  batch/layer norm forward and backward (chapter 3)
* :mod:`.blocked`     the same batch norm, cache-blocked for speed (chapters 3 and 8)
* :mod:`.layers`      Linear, BatchNorm, LayerNorm, activations, Sequential, mlp
* :mod:`.init`        weight initialisers (chapter 2)
* :mod:`.losses`      mse_loss, softmax_cross_entropy
* :mod:`.optim`       SGD (with momentum), Adam
* :mod:`.gradcheck`   numerical_gradient, rel_error
* :mod:`.running`     population statistics, moving averages, momentum conventions (chapter 5)
* :mod:`.deploy`      folding batch norm into the layer before it (chapter 5)
* :mod:`.norms`       group, instance and RMS norm, functions and layers (chapter 6)
* :mod:`.conv`        convolution and the conv-BN-ReLU block, forward and backward (chapter 3)
"""
from . import blocked, conv, deploy, functional, gradcheck, init, layers, losses, norms, optim, running
from .conv import (Conv2d, GlobalAvgPool, conv2d_backward, conv2d_forward, conv_bn_relu_backward,
                   conv_bn_relu_forward)
from .deploy import fold_batchnorm, fold_linear_bn
from .functional import (batchnorm_backward, batchnorm_backward_staged, batchnorm_eval,
                         batchnorm_forward, layernorm_backward, layernorm_forward)
from .gradcheck import numerical_gradient, rel_error
from .layers import (BatchNorm, Identity, Layer, LayerNorm, Linear, ReLU, Sequential, Sigmoid,
                     Tanh, mlp)
from .losses import mse_loss, softmax, softmax_cross_entropy
from .norms import (GroupNorm, InstanceNorm, RMSNorm, groupnorm_backward, groupnorm_forward,
                    instancenorm_backward, instancenorm_forward, rmsnorm_backward,
                    rmsnorm_forward)
from .optim import SGD, Adam
from .running import (bn_layers_in_training_mode, convert_momentum, ema_effective_batches,
                      ema_mean_age, ema_update, initial_weight, population_statistics,
                      recompute_bn_stats, steps_to_forget)

__all__ = [
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_staged", "batchnorm_eval",
    "layernorm_forward", "layernorm_backward",
    "Layer", "Linear", "BatchNorm", "LayerNorm", "ReLU", "Tanh", "Sigmoid", "Identity",
    "Sequential", "mlp",
    "mse_loss", "softmax", "softmax_cross_entropy", "SGD", "Adam",
    "numerical_gradient", "rel_error", "init", "functional", "layers", "losses", "optim",
    "gradcheck", "blocked",
    "running", "deploy", "fold_batchnorm", "fold_linear_bn", "bn_layers_in_training_mode",
    "convert_momentum", "ema_effective_batches", "ema_mean_age", "ema_update", "initial_weight",
    "population_statistics", "recompute_bn_stats", "steps_to_forget",
    "norms", "groupnorm_forward", "groupnorm_backward", "instancenorm_forward",
    "instancenorm_backward", "rmsnorm_forward", "rmsnorm_backward", "GroupNorm", "InstanceNorm",
    "RMSNorm",
    "conv", "conv2d_forward", "conv2d_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
    "Conv2d", "GlobalAvgPool",
]
