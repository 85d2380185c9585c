"""Helpers shared by the integration tests: real X servers, processes, network namespaces."""
