"""visionkit.losses."""
