#!/bin/sh
# toolchain-file.sh ARCH: the CMake toolchain file for ARCH under toolchains/cmake, or
# nothing for x86_64 (built natively). Used by the Dockerfile's build stages.
set -eu
dir=$(cd "$(dirname "$0")/../cmake" && pwd)
case "${1:-}" in
  armv7) echo "$dir/armv7-linux-gnueabihf.cmake" ;;
  aarch64) echo "$dir/aarch64-linux-gnu.cmake" ;;
  x86_64) ;;
  *) echo "$0: unknown architecture '${1:-}': use armv7, aarch64 or x86_64" >&2; exit 2 ;;
esac
