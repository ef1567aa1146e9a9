"""Recommendations: signals, models, blending and metrics (pure)."""
