#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "oip.hpp"

using namespace edgefleet;
using nlohmann::json;

namespace {
std::string binaryOf(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }
}  // namespace

TEST_CASE("an infer request with flat and nested JSON data decodes to packed tensors") {
  const auto req = oip::decodeInferRequest(R"({"id":"r1","inputs":[
      {"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4.5]]},
      {"name":"n","datatype":"INT64","shape":[3],"data":[-1,0,9007199254740993]},
      {"name":"b","datatype":"BOOL","shape":[2],"data":[true,false]},
      {"name":"s","datatype":"BYTES","shape":[2],"data":["ab","ü"]}],
    "outputs":[{"name":"y"},{"name":"z","parameters":{"binary_data":true}}]})", std::nullopt);
  CHECK(req.id == "r1");
  REQUIRE(req.inputs.size() == 4);
  CHECK(req.inputs[0].values<float>() == std::vector<float>{1, 2, 3, 4.5f});
  CHECK(req.inputs[0].shape == std::vector<int64_t>{2, 2});
  CHECK(req.inputs[1].values<int64_t>() == std::vector<int64_t>{-1, 0, 9007199254740993LL});
  CHECK(req.inputs[2].raw == std::vector<uint8_t>{1, 0});
  CHECK(req.inputs[3].strings == std::vector<std::string>{"ab", "ü"});
  CHECK(req.outputs == std::vector<std::string>{"y", "z"});
  CHECK(req.binaryOutputs == std::set<std::string>{"z"});
}

TEST_CASE("every datatype keeps its width and range") {
  auto one = [](const char* type, const char* value) {
    return oip::decodeInferRequest(std::string(R"({"inputs":[{"name":"v","datatype":")") + type +
                                       R"(","shape":[1],"data":[)" + value + "]}]}",
                                   std::nullopt).inputs.at(0);
  };
  CHECK(one("UINT8", "255").values<uint8_t>() == std::vector<uint8_t>{255});
  CHECK(one("INT8", "-128").values<int8_t>() == std::vector<int8_t>{-128});
  CHECK(one("UINT16", "65535").values<uint16_t>() == std::vector<uint16_t>{65535});
  CHECK(one("INT32", "-2147483648").values<int32_t>() == std::vector<int32_t>{std::numeric_limits<int32_t>::min()});
  CHECK(one("UINT64", "18446744073709551615").values<uint64_t>() == std::vector<uint64_t>{18446744073709551615ULL});
  CHECK(one("FP64", "0.1").values<double>() == std::vector<double>{0.1});
  CHECK(one("INT32", "7.0").values<int32_t>() == std::vector<int32_t>{7});  // an integral float is an integer
  CHECK(oip::floatFromHalf(one("FP16", "1.5").values<uint16_t>().at(0)) == 1.5f);
  CHECK_THROWS_WITH_AS(one("UINT8", "256"), "input 'v' element 0: 256 is out of range for UINT8", InvalidInput);
  CHECK_THROWS_WITH_AS(one("INT8", "-129"), "input 'v' element 0: -129 is out of range for INT8", InvalidInput);
  CHECK_THROWS_WITH_AS(one("UINT32", "-1"), "input 'v' element 0: -1 is out of range for UINT32", InvalidInput);
  CHECK_THROWS_WITH_AS(one("INT64", "1.5"), "input 'v' element 0: 1.5 is not an integer", InvalidInput);
  CHECK_THROWS_WITH_AS(one("FP32", "\"1\""), "input 'v' element 0: expected a number for FP32, got string", InvalidInput);
  CHECK_THROWS_WITH_AS(one("BYTES", "1"), "input 'v' element 0: expected a string for BYTES, got number", InvalidInput);
  CHECK_THROWS_WITH_AS(one("BOOL", "2"), "input 'v' element 0: expected true or false for BOOL, got 2", InvalidInput);
}

TEST_CASE("malformed requests are refused with the field at fault") {
  auto fails = [](const std::string& body) {
    try {
      oip::decodeInferRequest(body, std::nullopt);
    } catch (const InvalidInput& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(fails("{not json").rfind("the request body is not JSON", 0) == 0);
  CHECK(fails("[1]") == "the request body must be a JSON object with \"inputs\"");
  CHECK(fails(R"({"inputs":[]})") == "\"inputs\" must be a non-empty array");
  CHECK(fails(R"({"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]})") == "each input needs a \"name\" string");
  CHECK(fails(R"({"inputs":[{"name":"x","datatype":"FLOAT","shape":[1],"data":[1]}]})").find("unknown datatype \"FLOAT\"") != std::string::npos);
  CHECK(fails(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]})").find("non-negative integers") != std::string::npos);
  CHECK(fails(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]})") ==
        "tensor 'x': shape [2,2] needs 4 elements (16 bytes), got 12 bytes");
  CHECK(fails(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]})") == "input 'x' has no \"data\"");
  CHECK(fails(R"({"id":5,"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]})") == "\"id\" must be a string");
}

TEST_CASE("binary tensor data follows the JSON header (binary tensor extension)") {
  const std::string header = R"({"inputs":[{"name":"x","datatype":"FP32","shape":[3],"parameters":{"binary_data_size":12}},)"
                             R"({"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":13}},)"
                             R"({"name":"k","datatype":"INT32","shape":[1],"data":[5]}]})";
  std::string strings;
  for (const std::string s : {"abc", "hi"}) {
    const uint32_t len = static_cast<uint32_t>(s.size());
    strings.append(reinterpret_cast<const char*>(&len), 4).append(s);
  }
  const std::string body = header + binaryOf({1.5f, -2, 3}) + strings;
  const auto req = oip::decodeInferRequest(body, header.size());
  CHECK(req.inputs.at(0).values<float>() == std::vector<float>{1.5f, -2, 3});
  CHECK(req.inputs.at(1).strings == std::vector<std::string>{"abc", "hi"});
  CHECK(req.inputs.at(2).values<int32_t>() == std::vector<int32_t>{5});

  CHECK_THROWS_WITH_AS(oip::decodeInferRequest(body + "xx", header.size()),
                       "2 bytes of binary data follow the JSON but no input's binary_data_size accounts for them", InvalidInput);
  CHECK_THROWS_WITH_AS(oip::decodeInferRequest(header + binaryOf({1.5f, -2, 3}), header.size()),
                       "input 's': binary_data_size 13 is more than the binary data left (0 bytes)", InvalidInput);
  const std::string tooLong = "Inference-Header-Content-Length " + std::to_string(header.size() + 1) +
                              " is larger than the body (" + std::to_string(header.size()) + " bytes)";
  CHECK_THROWS_WITH_AS(oip::decodeInferRequest(header, header.size() + 1), tooLong.c_str(), InvalidInput);
  const std::string wrongSize = R"({"inputs":[{"name":"x","datatype":"FP32","shape":[3],"parameters":{"binary_data_size":8}}]})";
  CHECK_THROWS_WITH_AS(oip::decodeInferRequest(wrongSize + binaryOf({1, 2}), wrongSize.size()),
                       "tensor 'x': shape [3] needs 3 elements (12 bytes), got 8 bytes", InvalidInput);
}

TEST_CASE("responses carry JSON data, or binary data after the header when asked") {
  oip::InferRequest req;
  req.id = "abc";
  const std::vector<Tensor> outputs{Tensor::of("y", DataType::Fp32, {2}, std::vector<float>{0.25f, NAN}),
                                    Tensor::of("k", DataType::Int64, {1}, std::vector<int64_t>{-3})};
  const auto plain = oip::encodeInferResponse("m", req, outputs);
  CHECK_FALSE(plain.jsonLength.has_value());
  const json doc = json::parse(plain.body);
  CHECK(doc["model_name"] == "m");
  CHECK(doc["id"] == "abc");
  CHECK(doc["outputs"][0]["datatype"] == "FP32");
  CHECK(doc["outputs"][0]["shape"] == json::array({2}));
  CHECK(doc["outputs"][0]["data"][0] == 0.25);
  CHECK(doc["outputs"][0]["data"][1].is_null());  // NaN has no JSON form
  CHECK(doc["outputs"][1]["data"] == json::array({-3}));

  req.binaryOutputs = {"y"};
  const auto mixed = oip::encodeInferResponse("m", req, outputs);
  REQUIRE(mixed.jsonLength.has_value());
  const json head = json::parse(mixed.body.substr(0, *mixed.jsonLength));
  CHECK(head["outputs"][0]["parameters"]["binary_data_size"] == 8);
  CHECK_FALSE(head["outputs"][0].contains("data"));
  CHECK(head["outputs"][1]["data"] == json::array({-3}));
  float back[2];
  REQUIRE(mixed.body.size() == *mixed.jsonLength + 8);
  std::memcpy(back, mixed.body.data() + *mixed.jsonLength, 8);
  CHECK(back[0] == 0.25f);
  CHECK(std::isnan(back[1]));  // exact in binary
}

TEST_CASE("half precision conversion is exact where half can be") {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0.000061035156f, 5.9604645e-8f})
    CHECK(oip::floatFromHalf(oip::halfFromFloat(f)) == f);
  CHECK(std::isinf(oip::floatFromHalf(oip::halfFromFloat(1e6f))));
  CHECK(std::isnan(oip::floatFromHalf(oip::halfFromFloat(NAN))));
  CHECK(oip::halfFromFloat(1.0f) == 0x3c00);
  CHECK(oip::floatFromHalf(0x0001) == 5.9604645e-8f);  // smallest subnormal
}

TEST_CASE("model metadata lists inputs and outputs with -1 for dynamic dimensions") {
  const ModelMetadata m{"m", "onnxruntime_onnx", {{"x", DataType::Fp32, {-1, 4}}}, {{"y", DataType::Int64, {-1}}}};
  const json doc = json::parse(oip::encodeModelMetadata(m));
  CHECK(doc["name"] == "m");
  CHECK(doc["platform"] == "onnxruntime_onnx");
  CHECK(doc["inputs"][0] == json{{"name", "x"}, {"datatype", "FP32"}, {"shape", {-1, 4}}});
  CHECK(doc["outputs"][0]["datatype"] == "INT64");
  CHECK(json::parse(oip::encodeServerMetadata("s", "1"))["extensions"] == json::array({"binary_tensor_data"}));
  CHECK(json::parse(oip::encodeError("say \"why\""))["error"] == "say \"why\"");
}
