"""Typed request/response messages over SSH channels."""
