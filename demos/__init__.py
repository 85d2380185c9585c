"""demos."""
