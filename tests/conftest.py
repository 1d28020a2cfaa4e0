"""Shared pytest setup: the repository root is importable (pyproject sets pythonpath too)."""
