"""visionkit.lab: experiments that turn handbook claims into measured results.

``demo`` is the main job (``visionkit demo`` / ``make demo``): RetinaNet vs Faster R-CNN on ``shapes``,
COCO/VOC evaluation, NMS vs Soft-NMS on the crowded split, anchors, speed, and an HTML ``report``.
"""
