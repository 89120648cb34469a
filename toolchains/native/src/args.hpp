// Command line of edgefleet-infer: serve (OIP over HTTP), lines (OIP over stdin/stdout),
// imdb (the sentiment console) and probe (a health check for containers).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "http.hpp"
#include "text.hpp"

namespace edgefleet {

struct ModelSource {
  std::string name;
  std::string path;
};

struct Config {
  enum class Command { Serve, Lines, Imdb, Probe } command = Command::Serve;
  std::vector<ModelSource> models;  // serve, lines; imdb: exactly one
  http::ServerOptions server;
  int threads = 0;  // intra-op threads; 0 = cores - 1 (at least 1)
  // imdb
  std::string wordIndexPath;
  text::Encoding encoding;
  bool maxlenGiven = false;
  double threshold = 0.5;
  bool logits = false;
  // probe
  std::string probeUrl = "http://127.0.0.1:8080/v2/health/ready";
  int timeoutMs = 2000;
};

struct ParsedArgs {
  std::optional<Config> config;  // empty: print `output` and exit with `exitCode`
  int exitCode = 0;
  std::string output;
};

// Never exits the process; --help, --version and errors come back in `output`.
ParsedArgs parseArgs(const std::vector<std::string>& args, const std::string& version);

// The fleet's names: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, no "..".
bool isValidModelName(const std::string& name);
// "NAME=PATH" or "PATH" (named after the file, without .onnx); throws std::invalid_argument.
ModelSource parseModelSource(const std::string& text);
// Every *.onnx file directly in `dir`, sorted by name; throws std::runtime_error.
std::vector<ModelSource> modelsInDirectory(const std::string& dir);

}  // namespace edgefleet
