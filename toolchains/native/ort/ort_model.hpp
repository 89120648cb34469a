// The only code that knows ONNX Runtime: a ModelLoader on its C++ API.
#pragma once

#include <memory>

#include "../src/model.hpp"

namespace edgefleet {

std::unique_ptr<ModelLoader> makeOrtLoader();

}  // namespace edgefleet
