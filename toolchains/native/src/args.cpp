#include "args.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <sstream>

namespace edgefleet {

bool isValidModelName(const std::string& name) {
  auto plain = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  auto allowed = [&](char c) { return plain(c) || c == '.' || c == '_' || c == '-'; };
  return !name.empty() && name.size() <= 64 && plain(name[0]) && std::all_of(name.begin(), name.end(), allowed) &&
         name.find("..") == std::string::npos;
}

ModelSource parseModelSource(const std::string& text) {
  const auto eq = text.find('=');
  ModelSource source;
  source.path = eq == std::string::npos ? text : text.substr(eq + 1);
  source.name = eq == std::string::npos ? std::filesystem::path(text).stem().string() : text.substr(0, eq);
  if (source.path.empty()) throw std::invalid_argument("--model '" + text + "' names no file: use NAME=PATH or PATH");
  if (!isValidModelName(source.name))
    throw std::invalid_argument("model name '" + source.name +
                                "' is not valid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");
  return source;
}

std::vector<ModelSource> modelsInDirectory(const std::string& dir) {
  std::error_code ec;
  std::vector<ModelSource> found;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".onnx" || !entry.is_regular_file()) continue;
    found.push_back(parseModelSource(entry.path().string()));
  }
  if (ec) throw std::runtime_error("cannot read --model-dir '" + dir + "': " + ec.message());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  if (found.empty()) throw std::runtime_error("--model-dir '" + dir + "' holds no .onnx file");
  return found;
}

namespace {

struct Raw {
  std::vector<std::string> models;
  std::string modelDir;
  int64_t maxlen = 0;
};

void addModelOptions(CLI::App* cmd, Raw& raw, Config& c, bool many) {
  auto* model = cmd->add_option("-m,--model", raw.models, many ? "a model: NAME=PATH or PATH (repeatable)" : "the model file");
  if (!many) {
    model->required();
    return;
  }
  auto* dir = cmd->add_option("--model-dir", raw.modelDir, "serve every *.onnx file in this directory, named after the file");
  model->excludes(dir);
  cmd->add_option("--threads", c.threads, "intra-op threads per model (default: cores - 1)")->check(CLI::Range(0, 256));
}

void addServeOptions(CLI::App* serve, Config& c) {
  serve->add_option("--host", c.server.host, "address to listen on (0.0.0.0 in a container)")->capture_default_str();
  serve->add_option("-p,--port", c.server.port, "TCP port (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
  serve->add_option("--max-body-bytes", c.server.limits.maxBodyBytes, "largest request body accepted")->check(CLI::PositiveNumber)->capture_default_str();
  serve->add_option("--max-connections", c.server.maxConnections, "connections served at once")->check(CLI::Range(1, 4096))->capture_default_str();
}

void addImdbOptions(CLI::App* imdb, Config& c, Raw& raw) {
  imdb->add_option("-w,--word-index", c.wordIndexPath, "JSON word -> rank (keras.datasets.imdb.get_word_index())")->required();
  imdb->add_option("--maxlen", raw.maxlen, "review length in ids (default: the model's input length, else 200)")->check(CLI::PositiveNumber);
  imdb->add_option("--num-words", c.encoding.numWords, "vocabulary size used in training (ids beyond it are out-of-vocabulary; 0: no limit)")->check(CLI::NonNegativeNumber);
  imdb->add_option("--index-from", c.encoding.indexFrom, "offset added to each word's rank in training")->check(CLI::NonNegativeNumber)->capture_default_str();
  imdb->add_option("--threshold", c.threshold, "probability at or above which a review is positive")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  imdb->add_flag("--logits", c.logits, "the model outputs a logit: apply a sigmoid");
}

void finishModels(Config& c, const Raw& raw) {
  for (const auto& text : raw.models) c.models.push_back(parseModelSource(text));
  if (!raw.modelDir.empty()) c.models = modelsInDirectory(raw.modelDir);
  if (c.command != Config::Command::Probe && c.models.empty()) throw std::invalid_argument("give --model or --model-dir");
  for (std::size_t i = 0; i < c.models.size(); ++i)
    for (std::size_t j = i + 1; j < c.models.size(); ++j)
      if (c.models[i].name == c.models[j].name) throw std::invalid_argument("model name '" + c.models[i].name + "' is given twice");
  if (raw.maxlen > 0) {
    c.encoding.maxlen = static_cast<std::size_t>(raw.maxlen);
    c.maxlenGiven = true;
  }
}

}  // namespace

ParsedArgs parseArgs(const std::vector<std::string>& args, const std::string& version) {
  CLI::App app{"edgefleet-infer: ONNX models over the Open Inference Protocol (KServe V2), and the IMDB sentiment console"};
  app.set_version_flag("--version", version);
  app.require_subcommand(1);
  Config c;
  Raw raw;
  auto* serve = app.add_subcommand("serve", "serve models over HTTP (Open Inference Protocol / KServe V2 REST)");
  addModelOptions(serve, raw, c, true);
  addServeOptions(serve, c);
  auto* lines = app.add_subcommand("lines", "one JSON infer request per stdin line, one JSON answer per stdout line");
  addModelOptions(lines, raw, c, true);
  auto* imdb = app.add_subcommand("imdb", "interactive IMDB review sentiment console (exit() to leave)");
  addModelOptions(imdb, raw, c, false);
  addImdbOptions(imdb, c, raw);
  auto* probe = app.add_subcommand("probe", "exit 0 when an OIP server answers 200 (a container health check)");
  probe->add_option("--url", c.probeUrl, "URL to GET")->capture_default_str();
  probe->add_option("--timeout-ms", c.timeoutMs, "give up after this long")->check(CLI::Range(1, 600000))->capture_default_str();

  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes arguments last-first
  std::ostringstream out, err;
  ParsedArgs result;
  try {
    app.parse(reversed);
    c.command = serve->parsed() ? Config::Command::Serve
              : lines->parsed() ? Config::Command::Lines
              : imdb->parsed()  ? Config::Command::Imdb
                                : Config::Command::Probe;
    finishModels(c, raw);
    if (c.command == Config::Command::Probe) http::parseUrl(c.probeUrl);  // validate now
    result.config = c;
  } catch (const CLI::ParseError& e) {
    result.exitCode = app.exit(e, out, err);
    result.output = out.str() + err.str();
  } catch (const std::exception& e) {
    result.exitCode = 2;
    result.output = std::string("error: ") + e.what() + "\n";
  }
  return result;
}

}  // namespace edgefleet
