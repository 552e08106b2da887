"""visionkit.ops."""
