"""visionkit.compress."""
