"""visionkit.data."""
