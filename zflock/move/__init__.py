"""The move state machine."""
