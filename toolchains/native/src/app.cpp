#include "app.hpp"

#include <csignal>
#include <istream>
#include <ostream>
#include <thread>

#include "args.hpp"
#include "console.hpp"
#include "service.hpp"

#ifndef EDGEFLEET_INFER_VERSION
#define EDGEFLEET_INFER_VERSION "0.0.0"
#endif

namespace edgefleet {

const char* const kProgramVersion = EDGEFLEET_INFER_VERSION;

namespace {

int defaultThreads() {
  const unsigned cores = std::thread::hardware_concurrency();
  return cores > 1 ? static_cast<int>(cores) - 1 : 1;
}

ModelRepository loadAll(const Config& c, ModelLoader& loader, std::ostream& err) {
  ModelRepository repo;
  const LoadOptions options{c.threads > 0 ? c.threads : defaultThreads()};
  for (const auto& source : c.models) {
    repo.add(loader.load(source.name, source.path, options));
    err << "loaded model '" << source.name << "' from " << source.path << '\n';
  }
  return repo;
}

// SIGINT and SIGTERM are blocked in every thread and taken here, so `docker stop` drains requests.
int serveUntilSignal(const Config& c, const ModelRepository& repo, ModelLoader& loader, std::ostream& err) {
  const ServerInfo info{"edgefleet-infer", std::string(kProgramVersion) + " (" + loader.runtimeVersion() + ")"};
  http::Server server(c.server, [&](const http::Request& r) { return handleOip(repo, info, r); });
  server.listen();
  err << "serving " << repo.names().size() << " model(s) over the Open Inference Protocol on http://" << c.server.host
      << ":" << server.port() << "/v2\n" << std::flush;
  std::thread acceptor([&] { server.run(); });
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  int signal = 0;
  sigwait(&signals, &signal);
  err << "signal " << signal << ": draining requests and stopping\n";
  server.stop();
  acceptor.join();
  return 0;
}

int runImdb(Config c, ModelLoader& loader, std::istream& in, std::ostream& out, std::ostream& err) {
  const text::WordIndex index = text::WordIndex::fromFile(c.wordIndexPath);
  ModelRepository repo = loadAll(c, loader, err);
  Model& model = *repo.find(c.models.front().name);
  const ImdbModelShape shape = inspectImdbModel(model.metadata());
  if (!c.maxlenGiven && shape.maxlen > 0) c.encoding.maxlen = shape.maxlen;
  if (shape.maxlen > 0 && c.encoding.maxlen != shape.maxlen)
    throw std::runtime_error("--maxlen " + std::to_string(c.encoding.maxlen) + " does not match the model's input length " +
                             std::to_string(shape.maxlen));
  ConsoleOptions options;
  options.threshold = c.threshold;
  options.banner = "IMDB review sentiment (" + c.models.front().path + ", " + std::to_string(index.size()) +
                   " words, " + loader.runtimeVersion() + ")\nType a review and press Enter; exit() to leave.";
  return runConsole(in, out, index, c.encoding, modelClassifier(model, c.logits), options);
}

int runProbe(const Config& c, std::ostream& out) {
  const http::Url url = http::parseUrl(c.probeUrl);
  const http::ClientResponse r = http::request(url.host, url.port, "GET", url.target, "", {}, c.timeoutMs);
  out << r.status << ' ' << r.body << '\n';
  return r.status == 200 ? 0 : 1;
}

}  // namespace

int runMain(const std::vector<std::string>& args, ModelLoader& loader, std::istream& in, std::ostream& out,
            std::ostream& err) {
  const ParsedArgs parsed = parseArgs(args, std::string(kProgramVersion) + " (" + loader.runtimeVersion() + ")");
  if (!parsed.config) {
    (parsed.exitCode == 0 ? out : err) << parsed.output;
    return parsed.exitCode;
  }
  const Config& c = *parsed.config;
  try {
    switch (c.command) {
      case Config::Command::Serve: {
        sigset_t signals;  // before any thread starts (the runtime's thread pools among them)
        sigemptyset(&signals);
        sigaddset(&signals, SIGINT);
        sigaddset(&signals, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &signals, nullptr);
        const ModelRepository repo = loadAll(c, loader, err);
        return serveUntilSignal(c, repo, loader, err);
      }
      case Config::Command::Lines: {
        const ModelRepository repo = loadAll(c, loader, err);
        return serveLines(repo, in, out) == 0 ? 0 : 1;
      }
      case Config::Command::Imdb: return runImdb(c, loader, in, out, err);
      case Config::Command::Probe: return runProbe(c, out);
    }
  } catch (const std::exception& e) {
    err << "error: " << e.what() << '\n';
    return 1;
  }
  return 1;
}

}  // namespace edgefleet
