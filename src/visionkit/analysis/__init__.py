"""visionkit.analysis: parameters, MACs/FLOPs, output shapes and receptive field of any model."""

from visionkit.analysis.summary import LayerSummary, ModelSummary, summary

__all__ = ["LayerSummary", "ModelSummary", "summary"]
