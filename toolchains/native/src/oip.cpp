#include "oip.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

namespace edgefleet::oip {

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& message) { throw InvalidInput(message); }

template <typename T>
void appendRaw(Tensor& t, T value) {
  const auto* p = reinterpret_cast<const uint8_t*>(&value);
  t.raw.insert(t.raw.end(), p, p + sizeof(T));
}

std::string where(const Tensor& t, std::size_t index) {
  return "input '" + t.name + "' element " + std::to_string(index);
}

// A JSON integer, or a float with an integral value, within [lo, hi].
template <typename T>
T integerElement(const Tensor& t, const json& v, std::size_t index) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<T>::max()))
      bad(where(t, index) + ": " + v.dump() + " is out of range for " + dataTypeName(t.type));
    return static_cast<T>(u);
  }
  if (v.is_number_integer()) {
    const auto i = v.get<int64_t>();
    if (i < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
        (i > 0 && static_cast<uint64_t>(i) > static_cast<uint64_t>(std::numeric_limits<T>::max())))
      bad(where(t, index) + ": " + v.dump() + " is out of range for " + dataTypeName(t.type));
    return static_cast<T>(i);
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::trunc(d) != d) bad(where(t, index) + ": " + v.dump() + " is not an integer");
    if (std::fabs(d) >= 9.2e18) bad(where(t, index) + ": " + v.dump() + " is out of range for " + dataTypeName(t.type));
    return integerElement<T>(t, json(static_cast<int64_t>(d)), index);
  }
  bad(where(t, index) + ": expected a number for " + dataTypeName(t.type) + ", got " + v.type_name());
}

double floatElement(const Tensor& t, const json& v, std::size_t index) {
  if (!v.is_number()) bad(where(t, index) + ": expected a number for " + dataTypeName(t.type) + ", got " + v.type_name());
  return v.get<double>();
}

void appendJsonElement(Tensor& t, const json& v, std::size_t index) {
  switch (t.type) {
    case DataType::Bool:
      if (v.is_boolean()) return appendRaw<uint8_t>(t, v.get<bool>() ? 1 : 0);
      if (v.is_number() && (v == 0 || v == 1)) return appendRaw<uint8_t>(t, v == 1 ? 1 : 0);
      bad(where(t, index) + ": expected true or false for BOOL, got " + v.dump());
    case DataType::Uint8: return appendRaw(t, integerElement<uint8_t>(t, v, index));
    case DataType::Uint16: return appendRaw(t, integerElement<uint16_t>(t, v, index));
    case DataType::Uint32: return appendRaw(t, integerElement<uint32_t>(t, v, index));
    case DataType::Uint64: return appendRaw(t, integerElement<uint64_t>(t, v, index));
    case DataType::Int8: return appendRaw(t, integerElement<int8_t>(t, v, index));
    case DataType::Int16: return appendRaw(t, integerElement<int16_t>(t, v, index));
    case DataType::Int32: return appendRaw(t, integerElement<int32_t>(t, v, index));
    case DataType::Int64: return appendRaw(t, integerElement<int64_t>(t, v, index));
    case DataType::Fp16: return appendRaw(t, halfFromFloat(static_cast<float>(floatElement(t, v, index))));
    case DataType::Fp32: return appendRaw(t, static_cast<float>(floatElement(t, v, index)));
    case DataType::Fp64: return appendRaw(t, floatElement(t, v, index));
    case DataType::Bytes:
      if (!v.is_string()) bad(where(t, index) + ": expected a string for BYTES, got " + v.type_name());
      t.strings.push_back(v.get<std::string>());
      return;
  }
}

// Tensor data may be nested ("natural" multi-dimensional form) or flat; both are row-major.
void appendJsonData(Tensor& t, const json& data, std::size_t& index, int depth) {
  if (depth > 32) bad("input '" + t.name + "': data is nested deeper than 32 levels");
  if (data.is_array()) {
    for (const auto& item : data) appendJsonData(t, item, index, depth + 1);
    return;
  }
  appendJsonElement(t, data, index++);
}

std::vector<int64_t> decodeShape(const json& in, const std::string& name) {
  if (!in.contains("shape") || !in["shape"].is_array()) bad("input '" + name + "': \"shape\" must be an array of integers");
  std::vector<int64_t> shape;
  for (const auto& d : in["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) bad("input '" + name + "': shape " + in["shape"].dump() + " must hold non-negative integers");
    shape.push_back(d.get<int64_t>());
  }
  if (shape.size() > 16) bad("input '" + name + "': at most 16 dimensions are supported");
  return shape;
}

std::optional<std::size_t> binarySize(const json& item) {
  if (!item.contains("parameters")) return std::nullopt;
  const json& p = item["parameters"];
  if (!p.is_object() || !p.contains("binary_data_size")) return std::nullopt;
  if (!p["binary_data_size"].is_number_unsigned()) bad("\"binary_data_size\" must be a non-negative integer");
  return p["binary_data_size"].get<std::size_t>();
}

void decodeBinaryData(Tensor& t, std::string_view bytes) {
  if (t.type != DataType::Bytes) {
    t.raw.assign(bytes.begin(), bytes.end());
    return;
  }
  // BYTES in binary form: each element is a 4-byte little-endian length, then that many bytes.
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 4) bad("input '" + t.name + "': binary BYTES data ends inside an element length");
    uint32_t len = 0;
    std::memcpy(&len, bytes.data() + pos, 4);
    pos += 4;
    if (bytes.size() - pos < len) bad("input '" + t.name + "': binary BYTES element is longer than the data left");
    t.strings.emplace_back(bytes.substr(pos, len));
    pos += len;
  }
}

Tensor decodeInput(const json& in, std::string_view binary, std::size_t& binaryPos) {
  if (!in.is_object()) bad("each entry of \"inputs\" must be an object");
  if (!in.contains("name") || !in["name"].is_string()) bad("each input needs a \"name\" string");
  Tensor t;
  t.name = in["name"].get<std::string>();
  if (!in.contains("datatype") || !in["datatype"].is_string()) bad("input '" + t.name + "' needs a \"datatype\" string");
  const auto type = parseDataType(in["datatype"].get<std::string>());
  if (!type) bad("input '" + t.name + "': unknown datatype " + in["datatype"].dump() + " (use BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES)");
  t.type = *type;
  t.shape = decodeShape(in, t.name);
  if (auto size = binarySize(in)) {
    if (in.contains("data")) bad("input '" + t.name + "' has both \"data\" and \"binary_data_size\": give one");
    if (binary.size() - binaryPos < *size) bad("input '" + t.name + "': binary_data_size " + std::to_string(*size) + " is more than the binary data left (" + std::to_string(binary.size() - binaryPos) + " bytes)");
    decodeBinaryData(t, binary.substr(binaryPos, *size));
    binaryPos += *size;
  } else {
    if (!in.contains("data")) bad("input '" + t.name + "' has no \"data\"");
    std::size_t index = 0;
    appendJsonData(t, in["data"], index, 0);
  }
  t.checkConsistent();
  return t;
}

void decodeOutputs(const json& doc, InferRequest& req) {
  if (doc.contains("parameters") && doc["parameters"].is_object() && doc["parameters"].contains("binary_data_output"))
    req.allOutputsBinary = doc["parameters"]["binary_data_output"] == true;
  if (!doc.contains("outputs")) return;
  if (!doc["outputs"].is_array()) bad("\"outputs\" must be an array");
  for (const auto& out : doc["outputs"]) {
    if (!out.is_object() || !out.contains("name") || !out["name"].is_string()) bad("each requested output needs a \"name\" string");
    const auto name = out["name"].get<std::string>();
    req.outputs.push_back(name);
    if (out.contains("parameters") && out["parameters"].is_object() && out["parameters"].value("binary_data", false))
      req.binaryOutputs.insert(name);
  }
}

}  // namespace

InferRequest decodeInferRequest(std::string_view body, std::optional<std::size_t> jsonLength) {
  if (jsonLength && *jsonLength > body.size())
    bad("Inference-Header-Content-Length " + std::to_string(*jsonLength) + " is larger than the body (" + std::to_string(body.size()) + " bytes)");
  const std::string_view text = jsonLength ? body.substr(0, *jsonLength) : body;
  const std::string_view binary = jsonLength ? body.substr(*jsonLength) : std::string_view{};
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    bad(std::string("the request body is not JSON: ") + e.what());
  }
  if (!doc.is_object()) bad("the request body must be a JSON object with \"inputs\"");
  InferRequest req;
  if (doc.contains("id")) {
    if (!doc["id"].is_string()) bad("\"id\" must be a string");
    req.id = doc["id"].get<std::string>();
  }
  if (doc.contains("model_name")) {
    if (!doc["model_name"].is_string()) bad("\"model_name\" must be a string");
    req.modelName = doc["model_name"].get<std::string>();
  }
  if (!doc.contains("inputs") || !doc["inputs"].is_array() || doc["inputs"].empty()) bad("\"inputs\" must be a non-empty array");
  std::size_t binaryPos = 0;
  for (const auto& in : doc["inputs"]) req.inputs.push_back(decodeInput(in, binary, binaryPos));
  if (binaryPos != binary.size())
    bad(std::to_string(binary.size() - binaryPos) + " bytes of binary data follow the JSON but no input's binary_data_size accounts for them");
  decodeOutputs(doc, req);
  return req;
}

namespace {

template <typename T>
json jsonValues(const Tensor& t) {
  json data = json::array();
  for (T v : t.values<T>()) data.push_back(v);
  return data;
}

json jsonData(const Tensor& t) {
  switch (t.type) {
    case DataType::Bool: {
      json data = json::array();
      for (uint8_t v : t.raw) data.push_back(v != 0);
      return data;
    }
    case DataType::Uint8: return jsonValues<uint8_t>(t);
    case DataType::Uint16: return jsonValues<uint16_t>(t);
    case DataType::Uint32: return jsonValues<uint32_t>(t);
    case DataType::Uint64: return jsonValues<uint64_t>(t);
    case DataType::Int8: return jsonValues<int8_t>(t);
    case DataType::Int16: return jsonValues<int16_t>(t);
    case DataType::Int32: return jsonValues<int32_t>(t);
    case DataType::Int64: return jsonValues<int64_t>(t);
    case DataType::Fp16: {
      json data = json::array();
      for (uint16_t h : t.values<uint16_t>()) data.push_back(floatFromHalf(h));
      return data;
    }
    case DataType::Fp32: return jsonValues<float>(t);
    case DataType::Fp64: return jsonValues<double>(t);
    case DataType::Bytes: return t.strings;
  }
  return json::array();
}

std::string binaryData(const Tensor& t) {
  if (t.type != DataType::Bytes) return std::string(t.raw.begin(), t.raw.end());
  std::string out;
  for (const auto& s : t.strings) {
    const auto len = static_cast<uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&len), 4);
    out += s;
  }
  return out;
}

json specJson(const TensorSpec& spec) {
  return {{"name", spec.name}, {"datatype", dataTypeName(spec.type)}, {"shape", spec.shape}};
}

}  // namespace

EncodedBody encodeInferResponse(const std::string& modelName, const InferRequest& request,
                                const std::vector<Tensor>& outputs) {
  json doc = {{"model_name", modelName}, {"outputs", json::array()}};
  if (!request.id.empty()) doc["id"] = request.id;
  std::string binary;
  for (const Tensor& t : outputs) {
    json out = {{"name", t.name}, {"datatype", dataTypeName(t.type)}, {"shape", t.shape}};
    if (request.allOutputsBinary || request.binaryOutputs.count(t.name)) {
      const std::string bytes = binaryData(t);
      out["parameters"] = {{"binary_data_size", bytes.size()}};
      binary += bytes;
    } else {
      out["data"] = jsonData(t);
    }
    doc["outputs"].push_back(std::move(out));
  }
  // NaN and infinities have no JSON form: they are written as null (ask for binary data to keep them).
  EncodedBody encoded{doc.dump(-1, ' ', false, json::error_handler_t::replace), std::nullopt};
  if (!binary.empty() || request.allOutputsBinary || !request.binaryOutputs.empty()) {
    encoded.jsonLength = encoded.body.size();
    encoded.body += binary;
  }
  return encoded;
}

std::string encodeModelMetadata(const ModelMetadata& m) {
  json doc = {{"name", m.name}, {"versions", json::array({"1"})}, {"platform", m.platform},
              {"inputs", json::array()}, {"outputs", json::array()}};
  for (const auto& s : m.inputs) doc["inputs"].push_back(specJson(s));
  for (const auto& s : m.outputs) doc["outputs"].push_back(specJson(s));
  return doc.dump();
}

std::string encodeServerMetadata(const std::string& name, const std::string& version) {
  return json{{"name", name}, {"version", version}, {"extensions", json::array({"binary_tensor_data"})}}.dump();
}

std::string encodeError(const std::string& message) {
  return json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string encodeFlag(const char* key, bool value) { return json{{key, value}}.dump(); }

uint16_t halfFromFloat(float value) {
  uint32_t f;
  std::memcpy(&f, &value, 4);
  const uint32_t sign = (f >> 16) & 0x8000u;
  const int32_t exponent = static_cast<int32_t>((f >> 23) & 0xffu) - 127 + 15;
  uint32_t mantissa = f & 0x7fffffu;
  if (((f >> 23) & 0xffu) == 0xffu) return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u : 0));  // inf, nan
  if (exponent >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);                                      // overflow
  if (exponent <= 0) {                                                                                      // subnormal
    if (exponent < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000u;
    const int shift = 14 - exponent;
    uint32_t half = mantissa >> shift;
    if ((mantissa >> (shift - 1)) & 1u) ++half;  // round half up
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exponent) << 10) | (mantissa >> 13);
  if (mantissa & 0x1000u) ++half;  // round half up (may carry into the exponent, which is correct)
  return static_cast<uint16_t>(half);
}

float floatFromHalf(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t f;
  if (exponent == 0x1f) {
    f = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      f = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while (!(mantissa & 0x400u));
      f = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else {
    f = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &f, 4);
  return out;
}

}  // namespace edgefleet::oip
