#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "app.hpp"
#include "args.hpp"
#include "fake_model.hpp"
#include "service.hpp"

using namespace edgefleet;
namespace fs = std::filesystem;

namespace {

Config parsed(const std::vector<std::string>& args) {
  const ParsedArgs p = parseArgs(args, "test");
  INFO(p.output);
  REQUIRE(p.config.has_value());
  return *p.config;
}

std::string refused(const std::vector<std::string>& args) {
  const ParsedArgs p = parseArgs(args, "test");
  CHECK_FALSE(p.config.has_value());
  CHECK(p.exitCode != 0);
  return p.output;
}

struct TempDir {
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "edgefleet-test-XXXXXX").string();
    const char* made = ::mkdtemp(pattern.data());
    if (!made) throw std::runtime_error("cannot make a folder under " + fs::temp_directory_path().string());
    path = made;
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path file(const std::string& name, const std::string& content = "") const {
    std::ofstream(path / name) << content;
    return path / name;
  }
  fs::path path;
};

struct Run {
  int status;
  std::string out, err;
};
Run run(const std::vector<std::string>& args, const std::string& input = "") {
  testing::FakeLoader loader;
  std::istringstream in(input);
  std::ostringstream out, err;
  const int status = runMain(args, loader, in, out, err);
  return {status, out.str(), err.str()};
}

}  // namespace

TEST_CASE("serve takes models by name and path, and server options with safe defaults") {
  const Config c = parsed({"serve", "--model", "food=/m/food.onnx", "-m", "/m/pets.v2.onnx", "--port", "0", "--threads", "2"});
  CHECK(c.command == Config::Command::Serve);
  REQUIRE(c.models.size() == 2);
  CHECK(c.models[0].name == "food");
  CHECK(c.models[0].path == "/m/food.onnx");
  CHECK(c.models[1].name == "pets.v2");
  CHECK(c.server.host == "127.0.0.1");  // local only unless asked
  CHECK(c.server.port == 0);
  CHECK(c.threads == 2);
  const Config d = parsed({"serve", "-m", "a.onnx"});
  CHECK(d.server.port == 8080);
  CHECK(d.server.limits.maxBodyBytes == 64u * 1024 * 1024);
}

TEST_CASE("--model-dir serves every .onnx file in it, sorted") {
  TempDir dir;
  dir.file("b.onnx");
  dir.file("a.onnx");
  dir.file("notes.txt");
  const Config c = parsed({"lines", "--model-dir", dir.path.string()});
  REQUIRE(c.models.size() == 2);
  CHECK(c.models[0].name == "a");
  CHECK(c.models[1].name == "b");
  TempDir empty;
  CHECK(refused({"serve", "--model-dir", empty.path.string()}).find("holds no .onnx file") != std::string::npos);
}

TEST_CASE("bad command lines are refused with what to do") {
  CHECK(refused({}).find("subcommand") != std::string::npos);
  CHECK(refused({"serve"}) == "error: give --model or --model-dir\n");
  CHECK(refused({"serve", "-m", "../x=a.onnx"}).find("model name '../x' is not valid") != std::string::npos);
  CHECK(refused({"serve", "-m", "a=x.onnx", "-m", "a=y.onnx"}) == "error: model name 'a' is given twice\n");
  CHECK(refused({"serve", "-m", "a.onnx", "--port", "70000"}).find("--port") != std::string::npos);
  CHECK(refused({"serve", "-m", "a.onnx", "--model-dir", "/tmp"}).find("excludes") != std::string::npos);
  CHECK(refused({"serve", "-m", "a.onnx", "--bogus"}).find("--bogus") != std::string::npos);
  CHECK(refused({"imdb", "-m", "a.onnx"}).find("--word-index") != std::string::npos);
  CHECK(refused({"probe", "--url", "ftp://x"}).find("is not an http:// URL") != std::string::npos);
}

TEST_CASE("imdb takes the training encoding; --help and --version exit 0") {
  const Config c = parsed({"imdb", "-m", "s.onnx", "-w", "idx.json", "--num-words", "10000", "--maxlen", "80", "--threshold", "0.6"});
  CHECK(c.command == Config::Command::Imdb);
  CHECK(c.encoding.indexFrom == 3);
  CHECK(c.encoding.numWords == 10000);
  CHECK(c.encoding.maxlen == 80);
  CHECK(c.maxlenGiven);
  CHECK(c.threshold == doctest::Approx(0.6));
  const ParsedArgs help = parseArgs({"serve", "--help"}, "test");
  CHECK(help.exitCode == 0);
  CHECK(help.output.find("--model-dir") != std::string::npos);
  const ParsedArgs version = parseArgs({"--version"}, "9.9.9");
  CHECK(version.exitCode == 0);
  CHECK(version.output.find("9.9.9") != std::string::npos);
}

TEST_CASE("lines runs the loaded models; a model that fails to load stops the program with the reason") {
  TempDir dir;
  const Run ok = run({"lines", "-m", (dir.path / "affine.onnx").string()},
                     R"({"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]})" "\n");
  CHECK(ok.status == 0);
  CHECK(nlohmann::json::parse(ok.out)["outputs"][0]["data"] == nlohmann::json::array({3, 5, 7}));
  CHECK(ok.err.find("loaded model 'affine'") != std::string::npos);
  const Run bad = run({"lines", "-m", "broken.onnx"});
  CHECK(bad.status == 1);
  CHECK(bad.err == "error: cannot load model 'broken' from broken.onnx: not an ONNX model\n");
}

TEST_CASE("imdb runs the console on the model, with its input length") {
  TempDir dir;
  const auto index = dir.file("index.json", R"({"good":1,"bad":2})");  // good = 1 + 3 = 4, the fake's positive id
  const Run r = run({"imdb", "-m", (dir.path / "sentiment.onnx").string(), "-w", index.string()}, "good good bad nope\nexit()\n");
  CHECK(r.status == 0);
  CHECK(r.out.find("Type a review and press Enter; exit() to leave.") != std::string::npos);
  // [0,0,0,1,4,4,5,2]: two of the 8 ids are "good"
  CHECK(r.out.find("negative (p = 0.250); 1 of 4 words not in the vocabulary") != std::string::npos);
  const Run mismatch = run({"imdb", "-m", (dir.path / "sentiment.onnx").string(), "-w", index.string(), "--maxlen", "9"});
  CHECK(mismatch.status == 1);
  CHECK(mismatch.err.find("--maxlen 9 does not match the model's input length 8") != std::string::npos);
}

TEST_CASE("probe exits 0 only when the server answers 200") {
  ModelRepository repo;
  repo.add(std::make_unique<testing::AffineModel>("affine"));
  http::ServerOptions options;
  options.port = 0;
  http::Server server(options, [&](const http::Request& r) { return handleOip(repo, {}, r); });
  server.listen();
  std::thread acceptor([&] { server.run(); });
  const std::string base = "http://127.0.0.1:" + std::to_string(server.port());
  const Run up = run({"probe", "--url", base + "/v2/health/ready"});
  CHECK(up.status == 0);
  CHECK(up.out == "200 {\"ready\":true}\n");
  CHECK(run({"probe", "--url", base + "/v2/models/nope/ready"}).status == 1);
  server.stop();
  acceptor.join();
  const Run down = run({"probe", "--url", base + "/v2/health/ready"});
  CHECK(down.status == 1);
  CHECK(down.err.find("cannot connect") != std::string::npos);
}
