"""Runner metadata and config helpers shared by export and runtime."""
