#!/bin/sh
# Runs inside the OpenZFS guest as root (started by /sbin/zflock-guest-init
# from the runner's job share, /run/job). Loads ZFS, copies the project's
# source from the read-only "src" share into a private directory, and runs
# pytest with the arguments listed in /run/job/pytest-args (one per line) in
# the native-ZFS test tier. Its exit status is pytest's.
set -u
t0=$(cut -d' ' -f1 /proc/uptime)
say() { echo "openzfs-vm[guest $(cut -d' ' -f1 /proc/uptime)s]: $*"; }

modprobe zfs || {
    say "modprobe zfs failed"
    exit 97
}
for m in veth bridge; do modprobe -q "$m"; done
mkdir -p /mnt/src /var/tmp/zflock-src
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro src /mnt/src || {
    say "cannot mount the source share"
    exit 98
}
# A private copy: pytest, hypothesis and __pycache__ write next to the
# sources, and the host's tree must stay untouched.
tar -C /mnt/src --exclude=./.venv --exclude=./.git --exclude=./.hypothesis \
    --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude='*/__pycache__' \
    -cf - . | tar -C /var/tmp/zflock-src -xf -
umount /mnt/src
cd /var/tmp/zflock-src || exit 98

say "kernel $(uname -r), $(cat /etc/zflock-image-info | tr '\n' ';')"
say "zfs version: $(zfs version 2>&1 | tr '\n' ' ')"

set --
while IFS= read -r arg || [ -n "$arg" ]; do
    [ -n "$arg" ] && set -- "$@" "$arg"
done </run/job/pytest-args
say "ready after ${t0}s of boot; running: pytest $*"

export ZFLOCK_TEST_ZFS=native ZFLOCK_LAB_ZFS=native
# Python under TCG is far slower than on the host: the lab tests stretch their
# timeouts and shrink the streams they cut mid-way by this factor
# (tests/agentlab.py SLOWDOWN). Measured: a lab stream moves ~15-20x slower here.
export ZFLOCK_TEST_SLOWDOWN=${ZFLOCK_TEST_SLOWDOWN:-5}
# The lab's wait for an agent to listen (90 s on a host), stretched by the same 5:
# in CI the guest shares the host's cores with the zfs-fuse suite, and a lab's
# three agents once took over 90 s to start (zflock/lab/agents.py).
export ZFLOCK_LAB_START_TIMEOUT=${ZFLOCK_LAB_START_TIMEOUT:-450}
export PATH=/opt/zflock-venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/var/tmp/zflock-src
export HOME=/root TMPDIR=/var/tmp LANG=C.UTF-8
# Bytecode may be written: the tree is a private copy, and under TCG every
# `python -m zflock` (CLI calls, lab agents) would otherwise recompile zflock.
export PYTHONUNBUFFERED=1
# Through a pipe, so pytest sees no terminal: plain progress lines, no
# colour codes in CI logs.
{
    /opt/zflock-venv/bin/python -m pytest -p no:cacheprovider --color=no "$@"
    echo $? >/run/pytest.rc
} 2>&1 | cat
rc=$(cat /run/pytest.rc 2>/dev/null || echo 1)
say "pytest exited with status $rc"
# Pools a crashed test left behind would keep their files open.
zpool list -H -o name 2>/dev/null | while read -r pool; do
    say "leftover pool $pool: exporting"
    zpool export -f "$pool"
done
exit $rc
