#!/bin/sh
# Installs the edgefleet device agent from this bundle (run it from the unpacked bundle, as root):
#
#   sudo ./install.sh --config pi-1.json
#
# pi-1.json is what `hostManager devices add pi-1 --json` printed (or just its "config" object).
# Creates the user, the directories with their modes, the agent's config (token in a file only the
# agent reads), installs this version under <prefix>/agent/versions/<version>, points
# <prefix>/agent/current at it, installs the systemd unit, enables and starts it. Run again with a
# newer bundle to upgrade (the config is kept unless --config is given). Without a running systemd
# (a container, a chroot) it installs everything and prints how to start the agent.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/edgefleet
etc=/etc/edgefleet
data=/var/lib/edgefleet-agent
user=edgefleet
unit_dir=/etc/systemd/system
config=""
start=yes
systemd=auto

usage() {
  cat <<EOF
usage: install.sh [--config FILE] [--prefix DIR] [--etc DIR] [--data DIR] [--user NAME] [--unit-dir DIR] [--no-start]
  --config FILE  provisioning output of 'hostManager devices add <id> --json' (needed on first install)
  --prefix DIR   install root (default $prefix; the agent goes to DIR/agent)
  --etc DIR      configuration directory (default $etc)
  --data DIR     the agent's data directory (default $data)
  --user NAME    the user the agent runs as, created if missing (default $user)
  --unit-dir DIR where the systemd unit goes (default $unit_dir)
  --no-start     install and enable, but do not start
  --no-systemd   install the unit file but do not call systemctl (images, chroots, tests)
EOF
}
fail() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --etc) etc=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --unit-dir) unit_dir=$2; shift 2 ;;
    --no-start) start=no; shift ;;
    --no-systemd) systemd=no; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; fail "unknown option $1" ;;
  esac
done

field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$here/bundle.json" | head -n 1; }
bundle_arch=$(field arch)
version=$(field version)
[ -n "$bundle_arch" ] && [ -n "$version" ] || fail "$here/bundle.json is missing or unreadable; unpack the whole bundle and run install.sh from it"

# The userland's architecture decides which Node.js runs: a 32-bit Raspberry Pi OS on a 64-bit
# kernel says aarch64 in uname but can only run armv7 programs, so ask dpkg first.
machine_arch() {
  deb=$(dpkg --print-architecture 2>/dev/null || true)
  case "$deb" in
    arm64) echo arm64; return ;;
    armhf) echo armv7; return ;;
    amd64) echo x64; return ;;
  esac
  case "$(uname -m)" in
    aarch64|arm64) echo arm64 ;;
    armv7l|armv8l) echo armv7 ;;
    x86_64|amd64) echo x64 ;;
    *) uname -m ;;
  esac
}
arch=$(machine_arch)
if [ "$arch" != "$bundle_arch" ]; then
  fail "this bundle is for $bundle_arch, but this machine is $arch (uname -m: $(uname -m)); install the $arch bundle (hostManager agent bundle --arch $arch)"
fi
[ "$(id -u)" -eq 0 ] || fail "run as root (sudo $0 ...): it creates a user and writes $prefix, $etc and $data"

if ! id "$user" >/dev/null 2>&1; then
  nologin=/usr/sbin/nologin
  [ -x "$nologin" ] || nologin=/bin/false
  useradd --system --user-group --home-dir "$data" --no-create-home --shell "$nologin" "$user" \
    || fail "could not create the user $user (useradd failed); create it, or pass --user NAME"
  echo "created system user $user"
fi
group=$(id -gn "$user")

home="$prefix/agent"
install -d -m 0755 "$prefix"
install -d -m 0755 -o "$user" -g "$group" "$home" "$home/versions"
install -d -m 0700 -o "$user" -g "$group" "$home/state"
install -d -m 0750 -o "$user" -g "$group" "$data"
install -d -m 0750 -o root -g "$group" "$etc"

# This version, unpacked beside the others; `current` switches to it in one step.
target="$home/versions/$version"
incoming="$home/versions/.incoming-$$"
rm -rf "$incoming"
cp -a "$here" "$incoming"
chown -R "$user:$group" "$incoming"
rm -rf "$target"
mv "$incoming" "$target"
install -m 0755 -o "$user" -g "$group" "$here/launcher" "$home/launcher"
ln -sfn "versions/$version" "$home/current.new"
mv -Tf "$home/current.new" "$home/current" 2>/dev/null || { rm -f "$home/current.new"; ln -sfn "versions/$version" "$home/current"; }
rm -f "$home/state/trial" "$home/state/healthy"

if [ -n "$config" ]; then
  [ -r "$config" ] || fail "cannot read $config; give the file 'hostManager devices add <id> --json' wrote"
  "$target/node/bin/node" "$target/lib/install-config.mjs" "$config" "$etc" "$data" "$(id -g "$user")" \
    || fail "$config is not a usable provisioning output; see the message above"
elif [ ! -f "$etc/agent.json" ]; then
  fail "no configuration yet: give --config FILE (the output of 'hostManager devices add <id> --json')"
fi

sed -e "s#@HOME@#$home#g" -e "s#@ETC@#$etc#g" -e "s#@DATA@#$data#g" -e "s#@USER@#$user#g" -e "s#@GROUP@#$group#g" \
  "$here/deviceAgent.service" >"$home/deviceAgent.service"
install -d -m 0755 "$unit_dir"
install -m 0644 "$home/deviceAgent.service" "$unit_dir/deviceAgent.service"

echo "installed edgefleet agent $version ($bundle_arch) in $home; config in $etc, data in $data"
run_line="runuser -u $user -- $home/launcher --config $etc/agent.json"
if [ "$systemd" = no ]; then
  echo "systemctl not called (--no-systemd). To start the agent now:"
  echo "  $run_line"
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable deviceAgent.service
  if [ "$start" = yes ]; then
    systemctl restart deviceAgent.service
    echo "started: systemctl status deviceAgent; journalctl -u deviceAgent -f"
  else
    echo "enabled; start it with: systemctl start deviceAgent"
  fi
else
  if command -v systemctl >/dev/null 2>&1; then
    systemctl enable deviceAgent.service >/dev/null 2>&1 && echo "enabled for the next boot with systemd"
  fi
  echo "systemd is not running here, so the agent was not started. The unit is $unit_dir/deviceAgent.service; to start the agent now:"
  echo "  $run_line"
fi
