"""zflock: move and replicate container data volumes between hosts with ZFS."""

__version__ = "0.1.0"
