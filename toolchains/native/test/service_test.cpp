#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <atomic>
#include <sstream>
#include <thread>

#include "fake_model.hpp"
#include "oip.hpp"
#include "service.hpp"

using namespace edgefleet;
using nlohmann::json;
using namespace std::string_literals;

namespace {

ModelRepository repository() {
  ModelRepository repo;
  repo.add(std::make_unique<testing::AffineModel>("affine"));
  repo.add(std::make_unique<testing::EchoModel>("echo", DataType::Bytes));
  repo.add(std::make_unique<testing::FailingModel>());
  return repo;
}

http::Request make(const std::string& method, const std::string& path, const std::string& body = "",
                   std::vector<std::pair<std::string, std::string>> headers = {}) {
  http::Request r;
  r.method = method;
  r.target = r.path = path;
  r.body = body;
  r.headers = std::move(headers);
  return r;
}

const std::string kAffineRequest =
    R"({"id":"q","inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[1,2,3,4,5,6]}]})";

}  // namespace

TEST_CASE("health, server and model metadata follow the Open Inference Protocol") {
  const ModelRepository repo = repository();
  const ServerInfo info{"edgefleet-infer", "0.1.0"};
  CHECK(json::parse(handleOip(repo, info, make("GET", "/v2/health/live")).body) == json{{"live", true}});
  CHECK(json::parse(handleOip(repo, info, make("GET", "/v2/health/ready")).body) == json{{"ready", true}});
  CHECK(json::parse(handleOip(repo, info, make("GET", "/v2")).body)["version"] == "0.1.0");
  const json meta = json::parse(handleOip(repo, info, make("GET", "/v2/models/affine")).body);
  CHECK(meta["inputs"][0] == json{{"name", "x"}, {"datatype", "FP32"}, {"shape", {-1, 3}}});
  CHECK(meta["outputs"].size() == 2);
  CHECK(handleOip(repo, info, make("GET", "/v2/models/affine/versions/1")).status == 200);
  CHECK(handleOip(repo, info, make("GET", "/v2/models/affine/ready")).status == 200);
  CHECK(handleOip(repo, info, make("GET", "/v2/models/affine/versions/1/ready")).status == 200);
}

TEST_CASE("unknown models, versions, paths and methods are refused") {
  const ModelRepository repo = repository();
  const ServerInfo info;
  const auto missing = handleOip(repo, info, make("GET", "/v2/models/nope"));
  CHECK(missing.status == 404);
  CHECK(json::parse(missing.body)["error"] == "no model named 'nope' is served here");
  CHECK(handleOip(repo, info, make("GET", "/v2/models/affine/versions/2")).status == 404);
  CHECK(handleOip(repo, info, make("GET", "/v2/models/affine/bogus")).status == 404);
  CHECK(handleOip(repo, info, make("GET", "/v1/models/affine")).status == 404);
  const auto wrong = handleOip(repo, info, make("GET", "/v2/models/affine/infer"));
  CHECK(wrong.status == 405);
  CHECK(wrong.headers.at(0) == std::make_pair(std::string("Allow"), std::string("POST")));
  CHECK(handleOip(repo, info, make("POST", "/v2/health/live")).status == 405);
}

TEST_CASE("infer runs the model on JSON tensors and answers JSON") {
  const ModelRepository repo = repository();
  const auto r = handleOip(repo, {}, make("POST", "/v2/models/affine/infer", kAffineRequest));
  REQUIRE(r.status == 200);
  CHECK(r.contentType == "application/json");
  const json doc = json::parse(r.body);
  CHECK(doc["model_name"] == "affine");
  CHECK(doc["id"] == "q");
  CHECK(doc["outputs"][0]["name"] == "y");
  CHECK(doc["outputs"][0]["data"] == json::array({3, 5, 7, 9, 11, 13}));
  CHECK(doc["outputs"][1]["data"] == json::array({6, 15}));

  const auto some = handleOip(repo, {}, make("POST", "/v2/models/affine/infer",
      R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[0,0,1]}],"outputs":[{"name":"rowsum"}]})"));
  const json one = json::parse(some.body);
  CHECK(one["outputs"].size() == 1);
  CHECK(one["outputs"][0]["data"] == json::array({1}));
}

TEST_CASE("infer with binary tensor data in and out") {
  const ModelRepository repo = repository();
  std::string header = R"({"inputs":[{"name":"in","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":12}}],)"
                       R"("parameters":{"binary_data_output":true}})";
  std::string data;
  for (const std::string& s : {"ab"s, "\0z"s}) {
    const uint32_t len = static_cast<uint32_t>(s.size());
    data.append(reinterpret_cast<const char*>(&len), 4).append(s);
  }
  const auto r = handleOip(repo, {}, make("POST", "/v2/models/echo/infer", header + data,
                                          {{"inference-header-content-length", std::to_string(header.size())}}));
  REQUIRE(r.status == 200);
  CHECK(r.contentType == "application/octet-stream");
  REQUIRE(r.headers.size() == 1);
  CHECK(r.headers[0].first == "Inference-Header-Content-Length");
  const std::size_t jsonLength = std::stoul(r.headers[0].second);
  const json head = json::parse(r.body.substr(0, jsonLength));
  CHECK(head["outputs"][0]["parameters"]["binary_data_size"] == 12);
  CHECK(r.body.substr(jsonLength) == data);  // BYTES with an embedded NUL survive
  CHECK(handleOip(repo, {}, make("POST", "/v2/models/echo/infer", header + data, {{"inference-header-content-length", "x1"}})).status == 400);
}

TEST_CASE("tensors that do not fit the model get 400 with the reason; a failing run gets 500") {
  const ModelRepository repo = repository();
  auto error = [&](const std::string& model, const std::string& body) {
    const auto r = handleOip(repo, {}, make("POST", "/v2/models/" + model + "/infer", body));
    return std::to_string(r.status) + " " + json::parse(r.body)["error"].get<std::string>();
  };
  CHECK(error("affine", R"({"inputs":[{"name":"x","datatype":"FP64","shape":[1,3],"data":[1,2,3]}]})") ==
        "400 input 'x' has datatype FP32, got FP64");
  CHECK(error("affine", R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]})") ==
        "400 input 'x' has shape [-1,3] (-1 = any), got [1,4]");
  CHECK(error("affine", R"({"inputs":[{"name":"z","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]})") ==
        "400 model 'affine' has no input 'z' (inputs: x)");
  CHECK(error("affine", R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}],"outputs":[{"name":"w"}]})") ==
        "400 model 'affine' has no output 'w' (outputs: y, rowsum)");
  CHECK(error("affine", "{") .rfind("400 the request body is not JSON", 0) == 0);
  CHECK(error("failing", R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]})") ==
        "500 inference failed: Gather: index 7 is out of bounds");
}

TEST_CASE("the OIP server answers concurrent clients over HTTP") {
  ModelRepository repo = repository();
  auto* affine = static_cast<testing::AffineModel*>(repo.find("affine"));
  http::ServerOptions options;
  options.port = 0;
  http::Server server(options, [&](const http::Request& r) { return handleOip(repo, {}, r); });
  server.listen();
  std::thread acceptor([&] { server.run(); });
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    clients.emplace_back([&] {
      const auto r = http::request("127.0.0.1", server.port(), "POST", "/v2/models/affine/infer", kAffineRequest,
                                   {{"Content-Type", "application/json"}});
      if (r.status == 200 && json::parse(r.body)["outputs"][0]["data"][0] == 3) ++ok;
    });
  for (auto& c : clients) c.join();
  server.stop();
  acceptor.join();
  CHECK(ok == 8);
  CHECK(affine->calls == 8);
}

TEST_CASE("the line protocol answers each line and survives bad ones") {
  ModelRepository one;
  one.add(std::make_unique<testing::AffineModel>("affine"));
  std::istringstream in(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,1,1]}]})" "\n"
                        "\n"
                        "not json\n"
                        R"({"model_name":"other","inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,1,1]}]})" "\n"
                        R"({"model_name":"affine","inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[0,0,0]}],"outputs":[{"name":"y","parameters":{"binary_data":true}}]})");
  std::ostringstream out;
  CHECK(serveLines(one, in, out) == 2);
  std::istringstream lines(out.str());
  std::string line;
  std::vector<json> answers;
  while (std::getline(lines, line)) answers.push_back(json::parse(line));
  REQUIRE(answers.size() == 4);
  CHECK(answers[0]["outputs"][0]["data"] == json::array({3, 3, 3}));
  CHECK(answers[1]["error"].get<std::string>().rfind("the request body is not JSON", 0) == 0);
  CHECK(answers[2]["error"] == "no model named 'other' is served here");
  CHECK(answers[3]["outputs"][0]["data"] == json::array({1, 1, 1}));  // lines always carry JSON

  ModelRepository two = repository();
  std::istringstream unnamed(R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,1,1]}]})");
  std::ostringstream answer;
  serveLines(two, unnamed, answer);
  CHECK(json::parse(answer.str())["error"] == "give \"model_name\": this process serves several models");
}
