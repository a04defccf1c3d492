#!/usr/bin/env bash
# The OpenZFS tier as a CI step (called by .ci/run after the zfs-fuse suite):
# build or reuse the OpenZFS 2.1 guest image (~/.cache/zflock/openzfs-vm),
# boot it under qemu (TCG) and run tests/openzfs-vm/selection.txt inside it.
# Exits with pytest's status from inside the guest (124 if the guest hung).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
# A stuck guest must not eat CI's 90 minutes: the runner kills it after this.
export ZFLOCK_VM_TIMEOUT=${ZFLOCK_VM_TIMEOUT:-1800}
status=0
python3 tests/openzfs-vm/run --zfs "${ZFLOCK_CI_OPENZFS:-2.1}" || status=$?
echo "openzfs-vm: CI step took $(($(date +%s) - started)) s (image build included if it ran)"
exit "$status"
