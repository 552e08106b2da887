"""visionkit.lab."""
