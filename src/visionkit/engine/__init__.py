"""visionkit.engine."""
