# ARMv7-A, hard float, NEON + VFPv4: Raspberry Pi 2/3/4/400 on a 32-bit OS (not Pi 1 / Zero, which are ARMv6).
# Debian: crossbuild-essential-armhf. A downloaded toolchain: -DEDGEFLEET_TOOLCHAIN_ROOT=... (see cross-linux-common.cmake).
set(EDGEFLEET_DEFAULT_TRIPLE arm-linux-gnueabihf)
set(EDGEFLEET_PROCESSOR armv7l)
set(EDGEFLEET_QEMU qemu-arm)
if(NOT DEFINED EDGEFLEET_ARCH_FLAGS)
  set(EDGEFLEET_ARCH_FLAGS "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard")
endif()
include("${CMAKE_CURRENT_LIST_DIR}/cross-linux-common.cmake")
