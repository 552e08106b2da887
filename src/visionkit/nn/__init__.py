"""visionkit.nn."""
