"""Prefect flows: ``training`` (the pipeline)."""
