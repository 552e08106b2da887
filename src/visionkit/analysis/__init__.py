"""visionkit.analysis."""
