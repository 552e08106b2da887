"""visionkit.models."""
