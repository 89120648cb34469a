# Shared by the per-architecture toolchain files; include()d after they set
# EDGEFLEET_DEFAULT_TRIPLE, EDGEFLEET_PROCESSOR, EDGEFLEET_QEMU and EDGEFLEET_ARCH_FLAGS.
#
# Which compiler, in this order:
#   EDGEFLEET_TOOLCHAIN_ROOT (cache variable or environment): a downloaded toolchain's root;
#     compilers are <root>/bin/<prefix>gcc and <prefix>g++.
#   otherwise the compilers on PATH (Debian's crossbuild-essential-armhf / -arm64).
#   EDGEFLEET_TOOLCHAIN_PREFIX (default "<triple>-") names them, e.g. "armv7-rpi-linux-gnueabihf-".
#   EDGEFLEET_SYSROOT (cache or environment): the target's root file system (libraries and
#     headers), used to find libraries and as qemu's -L; default: what a downloaded
#     toolchain's gcc -print-sysroot says, and /usr/<triple> for Debian's.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${EDGEFLEET_PROCESSOR})

foreach(var EDGEFLEET_TOOLCHAIN_ROOT EDGEFLEET_TOOLCHAIN_PREFIX EDGEFLEET_SYSROOT)
  if(NOT DEFINED ${var} AND DEFINED ENV{${var}})
    set(${var} "$ENV{${var}}")
  endif()
  # try_compile() projects re-read this file: hand them the same choice.
  set(ENV{${var}} "${${var}}")
endforeach()
set(EDGEFLEET_TOOLCHAIN_ROOT "${EDGEFLEET_TOOLCHAIN_ROOT}" CACHE PATH "root of a downloaded cross toolchain (empty: compilers on PATH)")
if(NOT EDGEFLEET_TOOLCHAIN_PREFIX)
  set(EDGEFLEET_TOOLCHAIN_PREFIX "${EDGEFLEET_DEFAULT_TRIPLE}-")
endif()
set(EDGEFLEET_TOOLCHAIN_PREFIX "${EDGEFLEET_TOOLCHAIN_PREFIX}" CACHE STRING "compiler name prefix, e.g. arm-linux-gnueabihf-")

if(EDGEFLEET_TOOLCHAIN_ROOT)
  set(_edgefleet_bin "${EDGEFLEET_TOOLCHAIN_ROOT}/bin/${EDGEFLEET_TOOLCHAIN_PREFIX}")
  if(NOT EXISTS "${_edgefleet_bin}g++")
    message(FATAL_ERROR "EDGEFLEET_TOOLCHAIN_ROOT=${EDGEFLEET_TOOLCHAIN_ROOT} has no ${_edgefleet_bin}g++: "
                        "give the toolchain's root (the folder holding bin/) and its prefix in EDGEFLEET_TOOLCHAIN_PREFIX")
  endif()
  if(NOT EDGEFLEET_SYSROOT)
    # A downloaded toolchain usually carries its target's libraries: ask where.
    execute_process(COMMAND "${_edgefleet_bin}gcc" -print-sysroot OUTPUT_VARIABLE _edgefleet_sysroot
                    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_edgefleet_sysroot AND IS_DIRECTORY "${_edgefleet_sysroot}")
      set(EDGEFLEET_SYSROOT "${_edgefleet_sysroot}")
    endif()
  endif()
else()
  set(_edgefleet_bin "${EDGEFLEET_TOOLCHAIN_PREFIX}")
  if(NOT EDGEFLEET_SYSROOT AND EXISTS "/usr/${EDGEFLEET_DEFAULT_TRIPLE}")
    set(EDGEFLEET_SYSROOT "/usr/${EDGEFLEET_DEFAULT_TRIPLE}")
  endif()
endif()
set(EDGEFLEET_SYSROOT "${EDGEFLEET_SYSROOT}" CACHE PATH "target root file system for libraries and qemu -L (empty: the compiler's own)")

set(CMAKE_C_COMPILER "${_edgefleet_bin}gcc")
set(CMAKE_CXX_COMPILER "${_edgefleet_bin}g++")
set(CMAKE_C_FLAGS_INIT "${EDGEFLEET_ARCH_FLAGS}")
set(CMAKE_CXX_FLAGS_INIT "${EDGEFLEET_ARCH_FLAGS}")

# Find target libraries and headers only in the target's root; programs on the build machine.
if(EDGEFLEET_SYSROOT)
  list(APPEND CMAKE_FIND_ROOT_PATH "${EDGEFLEET_SYSROOT}")
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest and add_test() run target programs through qemu user-mode emulation when it is there.
find_program(EDGEFLEET_QEMU_PROGRAM NAMES ${EDGEFLEET_QEMU}-static ${EDGEFLEET_QEMU})
if(EDGEFLEET_QEMU_PROGRAM)
  if(EDGEFLEET_SYSROOT)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${EDGEFLEET_QEMU_PROGRAM};-L;${EDGEFLEET_SYSROOT}")
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR "${EDGEFLEET_QEMU_PROGRAM}")
  endif()
endif()
