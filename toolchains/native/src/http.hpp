// A small HTTP/1.1 server and client on POSIX sockets: just what the inference API needs
// (Content-Length bodies, keep-alive, pipelining, Expect: 100-continue, size limits).
// Debian's cpp-httplib is a compiled library (not header-only), which would need the
// target architecture's build of it and of OpenSSL to cross-compile; this needs nothing.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edgefleet::http {

struct Request {
  std::string method;
  std::string target;  // as sent, e.g. "/v2/models/m/infer?x=1"
  std::string path;    // target without the query
  int minorVersion = 1;  // HTTP/1.<minorVersion>
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;

  std::optional<std::string> header(std::string_view lowerName) const;
  bool keepAlive() const;
};

struct Response {
  int status = 200;
  std::string contentType = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

const char* reasonPhrase(int status);
std::string serialize(const Response& response, bool keepAlive);

struct Limits {
  std::size_t maxHeaderBytes = 16 * 1024;
  std::size_t maxBodyBytes = 64 * 1024 * 1024;
};

// Incremental request parser: feed() bytes as they arrive; leftover bytes after a complete
// request stay buffered for the next one (pipelining).
class RequestParser {
 public:
  enum class State { NeedMore, Complete, Error };
  explicit RequestParser(Limits limits = {}) : limits_(limits) {}

  State feed(std::string_view bytes);
  // After Complete: the request; the parser is then ready for the next one (call feed("")).
  Request take();
  // True once the headers of a request with "Expect: 100-continue" are in and its body is not.
  bool wantsContinue() const { return headersDone_ && expectContinue_ && !continueSent_; }
  void continueSent() { continueSent_ = true; }
  int errorStatus() const { return errorStatus_; }
  const std::string& errorMessage() const { return errorMessage_; }
  bool hasBufferedBytes() const { return !buffer_.empty(); }

 private:
  State fail(int status, std::string message);
  State parseHead(std::size_t headEnd);
  Limits limits_;
  std::string buffer_;
  Request current_;
  bool headersDone_ = false;
  bool expectContinue_ = false;
  bool continueSent_ = false;
  std::size_t bodyLength_ = 0;
  int errorStatus_ = 0;
  std::string errorMessage_;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0 = any free port
  int maxConnections = 64;
  int idleTimeoutMs = 30000;
  Limits limits;
};

using Handler = std::function<Response(const Request&)>;

class Server {
 public:
  Server(ServerOptions options, Handler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens; throws std::runtime_error with the reason (e.g. the port is in use).
  void listen();
  int port() const { return port_; }
  // Accepts connections until stop(); each connection is served by its own thread.
  void run();
  // Stops accepting, lets requests in progress finish, closes idle connections, waits for them.
  void stop();

 private:
  void serveConnection(int fd);
  bool track(int fd);
  void untrack(int fd);
  ServerOptions options_;
  Handler handler_;
  int listenFd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable idle_;
  std::set<int> connections_;
};

struct ClientResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::optional<std::string> header(std::string_view lowerName) const;
};

// One request on its own connection ("Connection: close"); throws std::runtime_error on failure.
ClientResponse request(const std::string& host, int port, const std::string& method, const std::string& target,
                       const std::string& body = "",
                       const std::vector<std::pair<std::string, std::string>>& headers = {}, int timeoutMs = 10000);

struct Url {
  std::string host;
  int port = 80;
  std::string target = "/";
};
// "http://host[:port][/path]"; throws std::invalid_argument otherwise.
Url parseUrl(const std::string& url);

}  // namespace edgefleet::http
