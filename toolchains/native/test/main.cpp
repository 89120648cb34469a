// Unit tests of everything in edgefleet-infer that does not need ONNX Runtime.
// Run natively, and cross-compiled for armv7 and aarch64 under qemu (toolchains/test/native.test.ts).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
