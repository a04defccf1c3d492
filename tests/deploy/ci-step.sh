#!/usr/bin/env bash
# The deploy tier (issue 13): lint the Ansible role, then apply it to three
# systemd containers and test the agent under real systemd (tests/deploy).
# Run by hand (as root):  bash tests/deploy/ci-step.sh  [pytest arguments]
# Installs what it needs: docker.io, mmdebstrap and vagrant from Debian, the
# controller's Ansible into a virtual environment. Also checks the Vagrantfile.
# The node image and that environment are cached in ~/.cache/zflock/deploy,
# each keyed on its inputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
bash .ci/setup >/dev/null

packages=(docker.io mmdebstrap openssh-client vagrant)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "deploy tier: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # docker.io's service is never started: the tests run their own dockerd.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cache=${ZFLOCK_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zflock/deploy}
venv=$cache/venv-$(sha256sum tests/deploy/requirements.txt | cut -c1-16)
stamp=$venv/.installed
if [ ! -f "$stamp" ]; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r tests/deploy/requirements.txt
    touch "$stamp"
fi

export PATH="$venv/bin:$PATH"  # ansible-lint wants its own bin on PATH
echo "deploy tier: ansible-lint --profile production"
(cd ansible && "$venv/bin/ansible-lint" --offline --profile production --nocolor)
(cd vagrant && ANSIBLE_ROLES_PATH=../ansible/roles "$venv/bin/ansible-lint" --offline --profile production --nocolor provision.yml)

echo "deploy tier: vagrant validate"
# Its .vagrant directory goes to a scratch place, not into the checkout.
VAGRANT_DOTFILE_PATH=$(mktemp -d) vagrant validate --ignore-provider

status=0
ZFLOCK_DEPLOY_TIER=1 ZFLOCK_DEPLOY_VENV="$venv" .venv/bin/python -m pytest tests/deploy "$@" || status=$?
echo "deploy tier: took $(($(date +%s) - started)) s"
exit "$status"
