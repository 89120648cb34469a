// Tensors as the Open Inference Protocol (KServe V2) names them, independent of any runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgefleet {

// The OIP tensor data types (KServe V2 "Tensor Data Types").
enum class DataType { Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes };

// "FP32" etc.
const char* dataTypeName(DataType type);
std::optional<DataType> parseDataType(const std::string& name);
// Bytes per element; 0 for BYTES (variable length).
std::size_t elementSize(DataType type);

// A request or model error a client can fix: becomes HTTP 400 (or 404 with notFound).
class InvalidInput : public std::runtime_error {
 public:
  explicit InvalidInput(const std::string& message, bool notFound = false)
      : std::runtime_error(message), notFound_(notFound) {}
  bool notFound() const { return notFound_; }

 private:
  bool notFound_;
};

// A tensor: numeric data packed little-endian in `raw`; BYTES elements in `strings`.
struct Tensor {
  std::string name;
  DataType type = DataType::Fp32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> raw;
  std::vector<std::string> strings;

  // Product of the shape; throws InvalidInput on negative or overflowing dimensions.
  std::size_t elementCount() const;
  // Throws InvalidInput unless the data holds exactly elementCount() elements.
  void checkConsistent() const;

  template <typename T>
  static Tensor of(std::string name, DataType type, std::vector<int64_t> shape, const std::vector<T>& values);
  template <typename T>
  std::vector<T> values() const;
};

// What a model declares for one input or output; -1 marks a dynamic dimension.
struct TensorSpec {
  std::string name;
  DataType type = DataType::Fp32;
  std::vector<int64_t> shape;
};

std::string shapeText(const std::vector<int64_t>& shape);
// Throws InvalidInput when `tensor` does not fit `spec` (type, rank, fixed dimensions).
void checkAgainstSpec(const Tensor& tensor, const TensorSpec& spec);

template <typename T>
Tensor Tensor::of(std::string name, DataType type, std::vector<int64_t> shape, const std::vector<T>& values) {
  Tensor t;
  t.name = std::move(name);
  t.type = type;
  t.shape = std::move(shape);
  if (sizeof(T) != elementSize(type)) throw std::logic_error("Tensor::of: element size does not match the data type");
  t.raw.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.raw.data(), values.data(), t.raw.size());
  return t;
}

template <typename T>
std::vector<T> Tensor::values() const {
  if (sizeof(T) != elementSize(type)) throw std::logic_error("Tensor::values: element size does not match the data type");
  std::vector<T> out(raw.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), raw.data(), out.size() * sizeof(T));
  return out;
}

}  // namespace edgefleet
