// The Open Inference Protocol over HTTP (KServe V2 REST) and over stdin/stdout lines, on a ModelRepository.
#pragma once

#include <iosfwd>
#include <string>

#include "http.hpp"
#include "model.hpp"

namespace edgefleet {

struct ServerInfo {
  std::string name = "edgefleet-infer";
  std::string version;
};

// Routes one HTTP request: /v2, /v2/health/{live,ready}, /v2/models/{name}[/versions/1][/ready|/infer].
http::Response handleOip(const ModelRepository& models, const ServerInfo& info, const http::Request& request);

// Line protocol: each input line is one JSON infer request (as over HTTP, plus "model_name",
// which may be left out when one model is served); each answer is one JSON line, the OIP
// response or {"error": "..."}. Blank lines are skipped; end of input ends it. Returns the
// number of requests that failed.
int serveLines(const ModelRepository& models, std::istream& in, std::ostream& out);

}  // namespace edgefleet
