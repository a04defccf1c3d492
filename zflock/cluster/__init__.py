"""Cluster configuration, inventory and the ownership model."""
