// The Open Inference Protocol (KServe V2) JSON codec, with the binary tensor data extension.
#pragma once

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "model.hpp"
#include "tensor.hpp"

namespace edgefleet::oip {

struct InferRequest {
  std::string id;
  std::string modelName;  // "model_name": not part of an HTTP request (the URL names the model); the line protocol uses it
  std::vector<Tensor> inputs;
  std::vector<std::string> outputs;         // requested outputs; empty = all
  std::set<std::string> binaryOutputs;      // outputs asked for with "binary_data": true
  bool allOutputsBinary = false;            // request parameter "binary_data_output": true
};

// `body` is the whole request body. `jsonLength` is the Inference-Header-Content-Length header:
// the JSON is the first `jsonLength` bytes and binary tensor data follows (nullopt: JSON only).
// Throws InvalidInput with a sentence that names the field at fault.
InferRequest decodeInferRequest(std::string_view body, std::optional<std::size_t> jsonLength);

struct EncodedBody {
  std::string body;
  std::optional<std::size_t> jsonLength;  // set when binary data follows the JSON
};

EncodedBody encodeInferResponse(const std::string& modelName, const InferRequest& request,
                                const std::vector<Tensor>& outputs);
std::string encodeModelMetadata(const ModelMetadata& metadata);
std::string encodeServerMetadata(const std::string& name, const std::string& version);
std::string encodeError(const std::string& message);
// {"live": true} / {"ready": true}
std::string encodeFlag(const char* key, bool value);

// IEEE 754 half precision <-> float, for FP16 tensors in JSON.
uint16_t halfFromFloat(float value);
float floatFromHalf(uint16_t half);

}  // namespace edgefleet::oip
