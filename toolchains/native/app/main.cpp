// edgefleet-infer: the native inference program (see toolchains/README.md).
#include <iostream>

#include "../ort/ort_model.hpp"
#include "../src/app.hpp"

int main(int argc, char** argv) {
  const auto loader = edgefleet::makeOrtLoader();
  return edgefleet::runMain(std::vector<std::string>(argv + 1, argv + argc), *loader, std::cin, std::cout, std::cerr);
}
