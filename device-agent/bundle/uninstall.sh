#!/bin/sh
# Removes the edgefleet device agent that install.sh installed (run as root):
#
#   sudo /opt/edgefleet/agent/current/uninstall.sh [--purge]
#
# Stops and disables the unit, removes it and <prefix>/agent (every installed version). Keeps the
# configuration (<etc>), the data directory (models, logs) and the user unless --purge is given.
set -eu

prefix=/opt/edgefleet
etc=/etc/edgefleet
data=/var/lib/edgefleet-agent
user=edgefleet
unit_dir=/etc/systemd/system
purge=no
systemd=auto

fail() { echo "uninstall.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --etc) etc=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --unit-dir) unit_dir=$2; shift 2 ;;
    --purge) purge=yes; shift ;;
    --no-systemd) systemd=no; shift ;;
    -h|--help) echo "usage: uninstall.sh [--purge] [--no-systemd] [--prefix DIR] [--etc DIR] [--data DIR] [--user NAME] [--unit-dir DIR]"; exit 0 ;;
    *) fail "unknown option $1" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || fail "run as root (sudo $0)"

if [ "$systemd" = no ]; then
  :
elif [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now deviceAgent.service 2>/dev/null || true
elif command -v systemctl >/dev/null 2>&1; then
  systemctl disable deviceAgent.service >/dev/null 2>&1 || true
fi
rm -f "$unit_dir/deviceAgent.service"
if [ "$systemd" != no ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then systemctl daemon-reload; fi
# an agent started by hand (no systemd): stop its launcher, which stops the agent
for pid in $(pgrep -f "$prefix/agent/launcher" 2>/dev/null || true); do kill -s TERM "$pid" 2>/dev/null || true; done
rm -rf "$prefix/agent"
rmdir "$prefix" 2>/dev/null || true
echo "removed the edgefleet agent from $prefix/agent and the unit"
if [ "$purge" = yes ]; then
  rm -rf "$etc" "$data"
  if [ "$user" != root ] && id "$user" >/dev/null 2>&1; then userdel "$user" 2>/dev/null || true; fi
  echo "purged $etc, $data and the user $user"
else
  echo "kept $etc (configuration and token) and $data (models, logs); remove them with --purge"
fi
