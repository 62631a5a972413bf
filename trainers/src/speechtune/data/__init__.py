"""Data toolkit: manifests, preflight checks, conversion, normalization, synthesis."""
