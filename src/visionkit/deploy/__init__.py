"""visionkit.deploy."""
