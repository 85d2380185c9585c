"""xproxy."""
