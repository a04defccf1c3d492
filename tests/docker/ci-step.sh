#!/usr/bin/env bash
# The Docker tier as a CI step (called by .ci/run after the zfs-fuse suite):
# install Debian's docker.io, podman and busybox-static if missing (about a minute;
# nothing is pulled from a registry: the test image is imported from
# busybox-static), then run tests/docker, where each lab node runs its own
# dockerd. ZFLOCK_DOCKER_REQUIRED turns "docker missing" into a failure
# instead of a skip, so this step can never pass without running the tier.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
missing=()
for pkg in docker.io busybox-static podman; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "docker tier: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
status=0
ZFLOCK_DOCKER_REQUIRED=1 .venv/bin/python -m pytest tests/docker || status=$?
echo "docker tier: CI step took $(($(date +%s) - started)) s (package install included if it ran)"
exit "$status"
