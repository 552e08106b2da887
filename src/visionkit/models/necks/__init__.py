"""Necks: modules between a backbone's ``c2..c5`` features and the detection heads."""

from visionkit.models.necks.fpn import FeaturePyramidNetwork, top_down_merge

__all__ = ["FeaturePyramidNetwork", "top_down_merge"]
