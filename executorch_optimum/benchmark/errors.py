"""The benchmark's one error type."""


class BenchmarkError(Exception):
    """Bad input or a failed step: one line for the user, no traceback."""
