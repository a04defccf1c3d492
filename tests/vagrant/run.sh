#!/usr/bin/env bash
# The Vagrant lab for real (issue 13, item 4), a by-hand tier:
#
#   bash tests/vagrant/run.sh [docker|libvirt]     # as root; default docker
#
# Starts its own daemon inside a network namespace of its own (no route out)
# and runs `vagrant up` there with the settings of tests/vagrant/<provider>.yml
# over vagrant/lab.yml, provisioned by vagrant/provision.yml (the same Ansible
# role as real hosts); then `zflock nodes`, `zflock create` and a timed
# `zflock move` between two nodes, checking that a file written on the source
# is on the destination.
#
#   docker:  dockerd (nsenter --net, as the deploy tier) and Vagrant's docker
#            provider; containers of the deploy tier's image (tests/deploy/
#            build-image: systemd, sshd, Python, zfs-fuse) plus Vagrant's key.
#   libvirt: virtlogd and libvirtd in a network and mount namespace
#            (tests/vagrant/ns-init: libvirt's state under the scratch
#            directory), vagrant-libvirt on qemu's software emulation, a local
#            box with real OpenZFS 2.1 (tests/vagrant/build-box).
#
# Everything is torn down by recorded PID and path, even on failure.
# ZFLOCK_VAGRANT_KEEP=1 leaves a successful lab running and prints how to
# reach it.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
provider=${1:-docker}
started=$(date +%s)
step() { echo "vagrant tier ($provider): [$(($(date +%s) - started)) s] $*"; }

case "$provider" in
docker) packages=(docker.io mmdebstrap vagrant) ;;
libvirt) packages=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils vagrant vagrant-libvirt dnsmasq-base) ;;
*)
    echo "vagrant tier: unknown provider '$provider' (use docker or libvirt)" >&2
    exit 2
    ;;
esac
if [ "$(id -u)" -ne 0 ]; then
    echo "vagrant tier: must run as root (namespaces, $provider's daemon)" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Their services are never started here: this script runs its own daemons.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The controller's Ansible: the same cached environment as the deploy tier.
cache=${ZFLOCK_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zflock/deploy}
venv=$cache/venv-$(sha256sum tests/deploy/requirements.txt | cut -c1-16)
if [ ! -f "$venv/.installed" ]; then
    step "Ansible's environment"
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r tests/deploy/requirements.txt
    touch "$venv/.installed"
fi

step "image"
if [ "$provider" = libvirt ]; then
    image=$(tests/vagrant/build-box | tail -n 1)
else
    image=$(tests/deploy/build-image | tail -n 1)
fi

scratch=$(mktemp -d /var/tmp/zflock-vagrant-XXXXXX)
chmod 0755 "$scratch"
holder=""
created_run_libvirt=""
[ -d /run/libvirt ] || created_run_libvirt=1

kill_pidfiles() {
    # Each file holds one PID written by the daemon it names.
    local file pid
    for file in "$@"; do
        # driver.pid files are libvirtd's own, killed by its own pidfile.
        [ -f "$file" ] && [ "${file##*/}" != driver.pid ] || continue
        pid=$(tr -dc 0-9 <"$file")
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
}
wait_gone() {
    local pid=$1 i
    for i in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 1
    done
    kill -9 "$pid" 2>/dev/null || true
}
teardown() {
    local rc=$?
    trap - EXIT INT TERM
    # Every step below is best effort: one that fails must not skip the rest.
    set +e
    if [ -n "$holder" ] && [ "${ZFLOCK_VAGRANT_KEEP:-}" = 1 ] && [ "$rc" = 0 ]; then
        echo "vagrant tier: kept; namespaces of PID $holder, scratch $scratch; e.g."
        echo "  nsenter -t $holder -n -m env VAGRANT_HOME=$scratch/vagrant.d VAGRANT_DOTFILE_PATH=$scratch/dot ZFLOCK_LAB=$scratch/lab.yml VAGRANT_CWD=$repo DOCKER_HOST=unix://$scratch/docker.sock vagrant ssh node1"
        exit 0
    fi
    step "tearing down"
    if [ -n "$holder" ]; then
        if [ -f "$scratch/docker.sock" ] && [ -f "$scratch/containers" ]; then
            # The containers Vagrant made, by the ids recorded after `up`.
            xargs -r docker -H "unix://$scratch/docker.sock" rm -f <"$scratch/containers" >/dev/null 2>&1 || true
        fi
        # The VMs (qemu), libvirt's dnsmasq, then the daemons: by the PID
        # files they wrote under the scratch directory.
        kill_pidfiles "$scratch"/state-run-libvirt/qemu/*.pid
        kill_pidfiles "$scratch"/state-run-libvirt/network/*.pid
        local daemon pid
        for daemon in dockerd libvirtd virtlogd; do
            [ -f "$scratch/$daemon.pid" ] || continue
            pid=$(tr -dc 0-9 <"$scratch/$daemon.pid")
            [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait_gone "$pid"
        done
        kill "$holder" 2>/dev/null || true
        wait_gone "$holder"
    fi
    [ -n "$created_run_libvirt" ] && rmdir /run/libvirt 2>/dev/null
    # dockerd's data root may hold mounts if it died hard.
    grep -o " $scratch/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$scratch"
    step "done (exit $rc)"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

step "wheelhouse"
.venv/bin/python -m pip wheel -q -w "$scratch/wheelhouse" . 2>/dev/null
{
    cat "tests/vagrant/$provider.yml"
    echo "wheelhouse: $scratch/wheelhouse"
} >"$scratch/lab.yml"

step "namespaces"
# libvirt: network and mount namespace (its state under the scratch
# directory). docker: network only; dockerd needs the host's mounts (cgroups).
if [ "$provider" = libvirt ]; then
    unshare_args=(--net --mount --propagation private)
    nsenter_args=(-n -m)
else
    unshare_args=(--net)
    nsenter_args=(-n)
fi
setsid unshare "${unshare_args[@]}" tests/vagrant/ns-init "$provider" "$scratch" \
    >"$scratch/ns-init.log" 2>&1 </dev/null &
holder=$!
for i in $(seq 1 50); do
    [ -f "$scratch/ns-ready" ] && break
    kill -0 "$holder" 2>/dev/null || break
    sleep 0.2
done
if [ ! -f "$scratch/ns-ready" ]; then
    echo "vagrant tier: the namespaces did not come up:" >&2
    cat "$scratch/ns-init.log" >&2
    exit 1
fi
inns() { nsenter -t "$holder" "${nsenter_args[@]}" "$@"; }

if [ "$provider" = libvirt ]; then
    step "libvirtd"
    inns virtlogd -d -p "$scratch/virtlogd.pid"
    inns libvirtd -d -p "$scratch/libvirtd.pid"
    for i in $(seq 1 60); do
        inns virsh -q -c qemu:///system version >/dev/null 2>&1 && break
        sleep 1
    done
    inns virsh -q -c qemu:///system version >/dev/null
else
    step "dockerd"
    mkdir -p "$scratch/docker-data" "$scratch/docker-exec"
    # Its own bridge lives in the namespace; no iptables, no NAT.
    setsid nsenter -t "$holder" -n /usr/sbin/dockerd \
        --data-root "$scratch/docker-data" --exec-root "$scratch/docker-exec" \
        -H "unix://$scratch/docker.sock" --pidfile "$scratch/dockerd.pid" \
        --iptables=false --ip6tables=false --ip-masq=false \
        >"$scratch/dockerd.log" 2>&1 </dev/null &
    export DOCKER_HOST=unix://$scratch/docker.sock
    for i in $(seq 1 60); do
        docker version >/dev/null 2>&1 && break
        sleep 1
    done
    docker version >/dev/null
    step "docker image zflock/lab-node"
    docker import -c 'CMD ["/sbin/init"]' "$image" zflock/deploy-node >/dev/null
    mkdir -p "$scratch/image"
    cp /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub "$scratch/image/vagrant.pub"
    cat >"$scratch/image/Dockerfile" <<'DOCKERFILE'
FROM zflock/deploy-node
COPY vagrant.pub /root/.ssh/authorized_keys
# Vagrant edits /etc/fstab at every `up` (synced folders); mmdebstrap makes none.
RUN chmod 0700 /root/.ssh && chmod 0600 /root/.ssh/authorized_keys && touch /etc/fstab
DOCKERFILE
    docker build -q -t zflock/lab-node "$scratch/image" >/dev/null
fi

export VAGRANT_HOME=$scratch/vagrant.d VAGRANT_DOTFILE_PATH=$scratch/dot VAGRANT_CWD=$repo
export ZFLOCK_LAB=$scratch/lab.yml PATH=$venv/bin:$PATH VAGRANT_NO_COLOR=1
# Vagrant's progress bars are carriage-return lines: keep the log readable.
vagrant_log() { stdbuf -oL tr '\r' '\n' | grep --line-buffered -v 'Progress: ' || true; }

if [ "$provider" = libvirt ]; then
    step "vagrant box add"
    inns vagrant box add --name zflock/openzfs-local "$image" 2>&1 | vagrant_log
    as_root=sudo
else
    as_root=""
fi
up_started=$(date +%s)
step "vagrant up --provider=$provider"
status=0
inns vagrant up --provider="$provider" 2>&1 | vagrant_log || status=$?
if [ "$provider" = docker ]; then
    docker ps -aq --no-trunc >"$scratch/containers"
fi
[ "$status" = 0 ] || exit "$status"
up_took=$(($(date +%s) - up_started))
step "vagrant up took $up_took s"

on() {
    local node=$1
    shift
    inns vagrant ssh "$node" -c "$*" 2>&1 | tr -d '\r'
}
nodes=$(inns vagrant status --machine-readable | awk -F, '$3 == "state" && $4 == "running" {print $2}')
first=$(echo "$nodes" | head -n 1)
second=$(echo "$nodes" | sed -n 2p)
step "zflock nodes (on $first)"
on "$first" $as_root zflock nodes
step "zflock create web --on $first"
on "$first" $as_root zflock create web --on "$first"
on "$first" "echo written-on-$first | $as_root tee /zflock/web/proof"
move_started=$(date +%s%N)
step "zflock move web --to $second"
on "$first" $as_root zflock move web --to "$second"
move_ms=$((($(date +%s%N) - move_started) / 1000000))
move_took=$((move_ms / 1000)).$(printf %03d $((move_ms % 1000)))
step "zflock move took $move_took s (the CLI call over vagrant ssh included)"
listing=$(on "$second" $as_root zflock ls web)
echo "$listing"
primary=$(echo "$listing" | awk '$1 == "web" {print $2}')
if [ "$primary" != "$second" ]; then
    echo "vagrant tier: after the move, web's primary is '$primary', not $second" >&2
    exit 1
fi
proof=$(on "$second" $as_root cat /zflock/web/proof) || proof="(unreadable: $proof)"
if [ "$proof" != "written-on-$first" ]; then
    echo "vagrant tier: /zflock/web/proof on $second reads '$proof', not 'written-on-$first'" >&2
    exit 1
fi
step "the file written on $first is on $second; vagrant up $up_took s, move $move_took s, whole run $(($(date +%s) - started)) s"
