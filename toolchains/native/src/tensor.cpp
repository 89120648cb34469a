#include "tensor.hpp"

#include <limits>

namespace edgefleet {

namespace {
struct TypeInfo {
  DataType type;
  const char* name;
  std::size_t size;
};
constexpr TypeInfo kTypes[] = {
    {DataType::Bool, "BOOL", 1},    {DataType::Uint8, "UINT8", 1},   {DataType::Uint16, "UINT16", 2},
    {DataType::Uint32, "UINT32", 4}, {DataType::Uint64, "UINT64", 8}, {DataType::Int8, "INT8", 1},
    {DataType::Int16, "INT16", 2},   {DataType::Int32, "INT32", 4},   {DataType::Int64, "INT64", 8},
    {DataType::Fp16, "FP16", 2},     {DataType::Fp32, "FP32", 4},     {DataType::Fp64, "FP64", 8},
    {DataType::Bytes, "BYTES", 0},
};
}  // namespace

const char* dataTypeName(DataType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t.name;
  return "?";
}

std::optional<DataType> parseDataType(const std::string& name) {
  for (const auto& t : kTypes)
    if (name == t.name) return t.type;
  return std::nullopt;
}

std::size_t elementSize(DataType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t.size;
  return 0;
}

std::size_t Tensor::elementCount() const {
  std::size_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw InvalidInput("tensor '" + name + "': shape " + shapeText(shape) + " has a negative dimension");
    const auto dim = static_cast<std::size_t>(d);
    if (dim != 0 && count > std::numeric_limits<std::size_t>::max() / dim)
      throw InvalidInput("tensor '" + name + "': shape " + shapeText(shape) + " is too large");
    count *= dim;
  }
  return count;
}

void Tensor::checkConsistent() const {
  const std::size_t count = elementCount();
  if (type == DataType::Bytes) {
    if (strings.size() != count)
      throw InvalidInput("tensor '" + name + "': shape " + shapeText(shape) + " needs " + std::to_string(count) +
                         " elements, got " + std::to_string(strings.size()));
    return;
  }
  const std::size_t size = elementSize(type);
  if (raw.size() != count * size)
    throw InvalidInput("tensor '" + name + "': shape " + shapeText(shape) + " needs " + std::to_string(count) +
                       " elements (" + std::to_string(count * size) + " bytes), got " + std::to_string(raw.size()) +
                       " bytes");
}

std::string shapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

void checkAgainstSpec(const Tensor& tensor, const TensorSpec& spec) {
  if (tensor.type != spec.type)
    throw InvalidInput("input '" + spec.name + "' has datatype " + dataTypeName(spec.type) + ", got " +
                       dataTypeName(tensor.type));
  bool fits = tensor.shape.size() == spec.shape.size();
  for (std::size_t i = 0; fits && i < spec.shape.size(); ++i)
    fits = spec.shape[i] < 0 || spec.shape[i] == tensor.shape[i];
  if (!fits)
    throw InvalidInput("input '" + spec.name + "' has shape " + shapeText(spec.shape) + " (-1 = any), got " +
                       shapeText(tensor.shape));
  tensor.checkConsistent();
}

}  // namespace edgefleet
