#include "service.hpp"

#include <istream>
#include <ostream>

#include "oip.hpp"

namespace edgefleet {

namespace {

http::Response json(int status, std::string body) { return http::Response{status, "application/json", {}, std::move(body)}; }
http::Response error(int status, const std::string& message) { return json(status, oip::encodeError(message)); }

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 1;
  while (start <= path.size()) {
    const std::size_t slash = path.find('/', start);
    const std::size_t end = slash == std::string::npos ? path.size() : slash;
    parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

std::optional<std::size_t> inferenceHeaderLength(const http::Request& request) {
  const auto value = request.header("inference-header-content-length");
  if (!value) return std::nullopt;
  if (value->empty() || value->size() > 18 || value->find_first_not_of("0123456789") != std::string::npos)
    throw InvalidInput("Inference-Header-Content-Length must be a byte count, got '" + *value + "'");
  return std::stoull(*value);
}

http::Response infer(Model& model, const http::Request& request) {
  const oip::InferRequest req = oip::decodeInferRequest(request.body, inferenceHeaderLength(request));
  const std::vector<Tensor> outputs = runChecked(model, req.inputs, req.outputs);
  oip::EncodedBody encoded = oip::encodeInferResponse(model.metadata().name, req, outputs);
  http::Response response = json(200, std::move(encoded.body));
  if (encoded.jsonLength) {
    response.contentType = "application/octet-stream";
    response.headers.emplace_back("Inference-Header-Content-Length", std::to_string(*encoded.jsonLength));
  }
  return response;
}

http::Response methodNotAllowed(const char* allowed) {
  http::Response r = error(405, std::string("use ") + allowed + " here");
  r.headers.emplace_back("Allow", allowed);
  return r;
}

// /v2/models/{name}[/versions/{v}][/ready|/infer]
http::Response routeModel(const ModelRepository& models, const http::Request& request, std::vector<std::string> parts) {
  const std::string& name = parts[2];
  Model* model = models.find(name);
  if (!model) return error(404, "no model named '" + name + "' is served here");
  std::size_t next = 3;
  if (parts.size() > 4 && parts[3] == "versions") {
    if (parts[4] != "1") return error(404, "model '" + name + "' has only version 1");
    next = 5;
  }
  const std::string action = parts.size() > next ? parts[next] : "";
  if (parts.size() > next + 1) return error(404, "unknown path " + request.path);
  if (action.empty()) {
    if (request.method != "GET") return methodNotAllowed("GET");
    return json(200, oip::encodeModelMetadata(model->metadata()));
  }
  if (action == "ready") {
    if (request.method != "GET") return methodNotAllowed("GET");
    return json(200, oip::encodeFlag("ready", true));
  }
  if (action == "infer") {
    if (request.method != "POST") return methodNotAllowed("POST");
    return infer(*model, request);
  }
  return error(404, "unknown path " + request.path);
}

}  // namespace

http::Response handleOip(const ModelRepository& models, const ServerInfo& info, const http::Request& request) {
  const std::vector<std::string> parts = split(request.path);
  if (parts.empty() || parts[0] != "v2") return error(404, "unknown path " + request.path + " (the API is under /v2)");
  try {
    if (parts.size() == 1) {
      if (request.method != "GET") return methodNotAllowed("GET");
      return json(200, oip::encodeServerMetadata(info.name, info.version));
    }
    if (parts[1] == "health" && parts.size() == 3 && (parts[2] == "live" || parts[2] == "ready")) {
      if (request.method != "GET") return methodNotAllowed("GET");
      // Models are loaded before the server listens, so a live server is a ready one.
      return json(200, oip::encodeFlag(parts[2] == "live" ? "live" : "ready", true));
    }
    if (parts[1] == "models" && parts.size() >= 3 && !parts[2].empty()) return routeModel(models, request, parts);
    return error(404, "unknown path " + request.path);
  } catch (const InvalidInput& e) {
    return error(e.notFound() ? 404 : 400, e.what());
  } catch (const InferenceFailed& e) {
    return error(500, std::string("inference failed: ") + e.what());
  }
}

int serveLines(const ModelRepository& models, std::istream& in, std::ostream& out) {
  int failures = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      const oip::InferRequest req = oip::decodeInferRequest(line, std::nullopt);
      const auto names = models.names();
      if (req.modelName.empty() && names.size() != 1) throw InvalidInput("give \"model_name\": this process serves several models");
      const std::string name = req.modelName.empty() ? names.front() : req.modelName;
      Model* model = models.find(name);
      if (!model) throw InvalidInput("no model named '" + name + "' is served here");
      const std::vector<Tensor> outputs = runChecked(*model, req.inputs, req.outputs);
      oip::InferRequest jsonOnly = req;  // lines carry JSON only
      jsonOnly.binaryOutputs.clear();
      jsonOnly.allOutputsBinary = false;
      out << oip::encodeInferResponse(name, jsonOnly, outputs).body << '\n' << std::flush;
    } catch (const std::exception& e) {
      ++failures;
      out << oip::encodeError(e.what()) << '\n' << std::flush;
    }
  }
  return failures;
}

}  // namespace edgefleet
