// Prints what the compiler built for, so a test can tell a toolchain file's flags took effect.
#include <cstdio>

int main() {
#if defined(__aarch64__)
  const char* arch = "aarch64";
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7
  const char* arch = "armv7";
#elif defined(__arm__)
  const char* arch = "arm-older-than-v7";
#elif defined(__x86_64__)
  const char* arch = "x86_64";
#else
  const char* arch = "unknown";
#endif
#if defined(__ARM_NEON) || defined(__ARM_NEON__)
  const int neon = 1;
#else
  const int neon = 0;
#endif
#if defined(__ARM_PCS_VFP) || defined(__aarch64__)
  const int hardFloat = 1;
#else
  const int hardFloat = 0;
#endif
#if defined(__ARM_FEATURE_FMA)
  const int fma = 1;  // VFPv4 on armv7
#else
  const int fma = 0;
#endif
  std::printf("arch=%s neon=%d hardfloat=%d fma=%d\n", arch, neon, hardFloat, fma);
  return 0;
}
