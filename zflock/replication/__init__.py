"""Replication planning (pure) and execution."""
