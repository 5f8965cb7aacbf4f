"""HTTP surfaces."""
