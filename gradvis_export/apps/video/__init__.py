"""Video helpers: overlays and encoding (the full pipeline grows here)."""
