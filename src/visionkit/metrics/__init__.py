"""visionkit.metrics: classification (§23, §30), multi-label mAP (§33), detection AP, segmentation.

Submodules: :mod:`~visionkit.metrics.classification` (confusion matrix and rates),
:mod:`~visionkit.metrics.curves` (PR/ROC curves, AUC, AP), :mod:`~visionkit.metrics.multilabel`
(§33 mAP), :mod:`~visionkit.metrics.detection` (COCO and VOC), :mod:`~visionkit.metrics.segmentation`.
"""
