"""visionkit.metrics."""
