#!/bin/sh
# runtime-rootfs.sh ARCH ROOTFS FILE...
#
# Makes ROOTFS runnable as a FROM-scratch image: copies in the program interpreter and every
# shared library the ELF FILEs (already inside ROOTFS) need, recursively, from the target's
# libraries (Debian's cross libraries in /usr/<triple>, or EDGEFLEET_SYSROOT). Libraries the
# files' RUNPATH finds inside ROOTFS are used as they are. Also makes ROOTFS/tmp. Prints what it copied.
set -eu

if [ "$#" -lt 3 ]; then
  echo "usage: $0 armv7|aarch64|x86_64 ROOTFS FILE..." >&2
  exit 2
fi
arch=$1
rootfs=$2
shift 2
case "$arch" in
  armv7) triple=arm-linux-gnueabihf; sysroot=${EDGEFLEET_SYSROOT:-/usr/$triple} ;;
  aarch64) triple=aarch64-linux-gnu; sysroot=${EDGEFLEET_SYSROOT:-/usr/$triple} ;;
  x86_64) triple=x86_64-linux-gnu; sysroot=${EDGEFLEET_SYSROOT:-} ;;
  *) echo "$0: unknown architecture '$arch': use armv7, aarch64 or x86_64" >&2; exit 2 ;;
esac
search="$sysroot/lib/$triple $sysroot/usr/lib/$triple $sysroot/lib $sysroot/usr/lib"
libdir="$rootfs/lib/$triple"  # a directory the target's ld.so searches by default
mkdir -p "$libdir"
mkdir -p -m 1777 "$rootfs/tmp"  # scratch has no /tmp; programs expect one

copy() {  # copy SRC DEST: the file itself, not a symlink to it
  mkdir -p "$(dirname "$2")"
  cp -L "$1" "$2"
  echo "${2#"$rootfs"}"
}

find_in() {  # find_in NAME DIR...: first DIR/NAME that exists
  name=$1
  shift
  for dir in "$@"; do
    if [ -e "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
  done
  return 1
}

queue=$(printf '%s\n' "$@")
seen=""
while [ -n "$queue" ]; do
  file=$(printf '%s\n' "$queue" | head -n 1)
  queue=$(printf '%s\n' "$queue" | tail -n +2)
  [ -n "$file" ] || continue
  case "$seen" in *"|$file|"*) continue ;; esac
  seen="$seen|$file|"
  [ -f "$file" ] || { echo "$0: $file does not exist" >&2; exit 1; }

  interp=$(readelf -l "$file" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  if [ -n "$interp" ] && [ ! -e "$rootfs$interp" ]; then
    src=$(find_in "$(basename "$interp")" $search) || { echo "$0: interpreter $interp not found under '$sysroot'" >&2; exit 1; }
    copy "$src" "$rootfs$interp"
  fi

  origin=$(dirname "$file")
  runpath=$(readelf -d "$file" 2>/dev/null | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p' | tr ':' ' ' | sed "s|\\\$ORIGIN|$origin|g")
  for lib in $(readelf -d "$file" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    # shellcheck disable=SC2086 # word splitting of the directory lists is intended
    if found=$(find_in "$lib" $runpath "$libdir" "$rootfs/lib" "$rootfs/lib64"); then
      queue=$(printf '%s\n%s' "$queue" "$found")
      continue
    fi
    src=$(find_in "$lib" $search) || { echo "$0: $file needs $lib, which is not under '$sysroot' ($search)" >&2; exit 1; }
    copy "$src" "$libdir/$lib"
    queue=$(printf '%s\n%s' "$queue" "$libdir/$lib")
  done
done
