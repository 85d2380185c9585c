"""replicaclient."""
