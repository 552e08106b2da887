"""The lab's experiments, one module per handbook topic (or group of topics).

Every module here whose name does not start with ``_`` is imported by
:func:`visionkit.lab.registry.load_experiments`; its ``@register(...)`` functions join the registry.
``_common`` holds what several experiments share (digits tensors, a small training run through the
engine's :class:`~visionkit.engine.trainer.Trainer`, plotting).
"""
