"""Optimizers implemented on ``torch.optim.Optimizer`` (handbook §26).

``SGD`` (plain, momentum, Nesterov), ``Adagrad``, ``RMSprop``, ``Adam`` (bias-corrected), ``AdamW`` and
``LBFGS`` (two-loop recursion + strong-Wolfe or Armijo line search). Batch / stochastic / mini-batch
gradient descent are the same optimizer with a different data-loader ``batch_size`` (see
:mod:`visionkit.engine.optim.sgd`).
"""

from visionkit.engine.optim.adaptive import Adagrad, Adam, AdamW, RMSprop
from visionkit.engine.optim.lbfgs import LBFGS, two_loop_recursion
from visionkit.engine.optim.sgd import SGD

__all__ = ["LBFGS", "SGD", "Adagrad", "Adam", "AdamW", "RMSprop", "two_loop_recursion"]
