"""Exportable wrappers per task: what torch.export sees, with our caches and attention."""
