"""The node agent daemon."""
