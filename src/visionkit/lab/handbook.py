"""The handbook's table of contents (its own numbering: there is no §32, §34 or §35), for the lab's book.

Each entry is ``(section, Chinese heading as printed, English rendering)``; the headings are quoted
verbatim, typos included (§16 "twp-stage"). The tests check every heading against the handbook's text.

Example:
    >>> TOPICS[0]
    ('§1', '欠拟合与过拟合？', 'Under-fitting and over-fitting')
    >>> topic_title("§36")
    'InceptionNet'
"""

from __future__ import annotations

__all__ = ["TOPICS", "topic_title"]

TOPICS: tuple[tuple[str, str, str], ...] = (
    ("§1", "欠拟合与过拟合？", "Under-fitting and over-fitting"),
    ("§2", "梯度消失？", "Vanishing gradients"),
    ("§3", "梯度爆炸？", "Exploding gradients"),
    ("§4", "BN层的原理？", "How batch normalization works"),
    ("§5", "权重初始化？", "Weight initialization"),
    ("§6", "调参心得", "Hyper-parameter tuning"),
    ("§7", "数据预处理", "Data preprocessing"),
    ("§8", "softNMS", "Soft-NMS"),
    ("§9", "FPN", "Feature pyramid networks"),
    ("§10", "RPN", "Region proposal network"),
    ("§11", "Focal loss", "Focal loss"),
    ("§12", "深度可分离卷积", "Depthwise separable convolution"),
    ("§13", "卷积神经网络参数量计算", "Counting the parameters of a CNN"),
    ("§14", "为什么VGG要用3*3的卷积核", "Why VGG uses 3×3 kernels"),
    ("§15", "1×1卷积的作用？", "What 1×1 convolutions do"),
    (
        "§16",
        "为什么One-stage在精度上逊色于twp-stage，但是速度完胜？",
        "Why one-stage detectors trail two-stage ones in accuracy but win on speed",
    ),
    ("§17", "RetinaNet", "RetinaNet"),
    ("§18", "YOLOv2和YOLOv3的区别", "YOLOv2 vs YOLOv3"),
    ("§19", "CNN的本质是什么？", "What a CNN essentially is"),
    ("§20", "池化层如何反向传播", "Back-propagation through pooling"),
    ("§21", "ResNet", "ResNet"),
    ("§22", "FCN", "Fully convolutional networks"),
    ("§23", "Accuracy、Precision、Recall和F1 Score", "Accuracy, precision, recall and F1 score"),
    ("§24", "ROI Pooling、ROI Align", "RoI Pooling and RoI Align"),
    ("§25", "ResNet v1与ResNet v2的区别", "ResNet v1 vs v2"),
    ("§26", "优化方法", "Optimization methods"),
    ("§27", "网络模型的压缩与量化", "Model compression and quantization"),
    ("§28", "MobileNetV1与MobileNetV2简介", "MobileNet V1 and V2"),
    ("§29", "学习率的调整", "Learning-rate schedules"),
    ("§30", "训练样本不均衡的问题", "Imbalanced training data"),
    ("§31", "Group convolution？", "Group convolution"),
    ("§33", "AP、mAP计算", "Computing AP and mAP"),
    ("§36", "InceptionNet", "InceptionNet"),
    ("frontier", "前沿", "Frontier: RefineDet, Cascade R-CNN, bottleneck layers"),
    ("§37", "TensorRT原理", "How TensorRT works"),
)


def topic_title(section: str) -> str:
    """The handbook's heading of ``section`` (as printed).

    Raises:
        KeyError: the handbook has no such section.
    """
    for key, heading, _ in TOPICS:
        if key == section:
            return heading
    raise KeyError(f"the handbook has no section {section!r}")
