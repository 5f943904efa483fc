"""Stateless tasks and the object store (issue 3)."""
