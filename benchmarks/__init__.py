"""Benchmarks: scripts that print side-by-side tables (see README.md)."""
