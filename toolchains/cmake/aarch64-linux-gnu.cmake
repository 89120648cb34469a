# AArch64 (ARMv8-A): Raspberry Pi 3/4/5 on a 64-bit OS, Jetson boards.
# Debian: crossbuild-essential-arm64. A downloaded toolchain: -DEDGEFLEET_TOOLCHAIN_ROOT=... (see cross-linux-common.cmake).
set(EDGEFLEET_DEFAULT_TRIPLE aarch64-linux-gnu)
set(EDGEFLEET_PROCESSOR aarch64)
set(EDGEFLEET_QEMU qemu-aarch64)
if(NOT DEFINED EDGEFLEET_ARCH_FLAGS)
  set(EDGEFLEET_ARCH_FLAGS "-march=armv8-a")
endif()
include("${CMAKE_CURRENT_LIST_DIR}/cross-linux-common.cmake")
