"""The move: pre-copy rounds, cutover, fencing, rollback, recovery.

Pure decisions (`converge.py`, `marker.py`, `recovery.py`) are separate from
the state machine that carries them out (`driver.py`) through two endpoints
(`endpoint.py`): the source's own ZFS (`zfs_source.py`) and the destination,
which the source agent reaches over RPC and which promotes itself
(`zfs_destination.py`). See docs/move.md for the states and their recovery.
"""
