"""visionkit.engine: training — a short loop plus hooks, and everything around it.

Modules (import them directly; this package imports nothing):

* ``trainer`` — :class:`Trainer` and :class:`HookBase`; ``hooks`` — schedule, checkpoint, evaluation,
  CSV/TensorBoard logging, progress, early stopping, EMA.
* ``optim`` — SGD/momentum/Nesterov, Adagrad, RMSprop, Adam, AdamW, L-BFGS (§26);
  ``schedules`` — closed-form learning-rate schedules and warm-up (§29).
* ``checkpoint`` — atomic checkpoints, RNG state, seeding; ``distributed`` — DDP through torchrun.
* ``diagnostics`` — gradient-norm monitor and fit diagnosis (§1–§3); ``regularization`` — weight-decay
  groups, L1/L2 penalties, ensembles.
* ``lr_finder``, ``search`` — learning-rate range test and random search (§6);
  ``config`` — frozen dataclass recipes with ``key=value`` overrides; ``classify`` — the
  ``visionkit train classify`` run.
"""
