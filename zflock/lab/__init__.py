"""The local multi-node lab built from network namespaces and zfs-fuse."""
