"""SavedModel export for TF Serving: serving signatures, versioned folders, models.config."""
