"""Shared test helpers: seeding, tiny random checkpoints, reference comparisons."""
