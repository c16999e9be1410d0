"""Utilities: atomic files and locks, the available CPUs, array helpers."""
