#include "http.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace edgefleet::http {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool isToken(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
  });
}

std::optional<std::string> findHeader(const std::vector<std::pair<std::string, std::string>>& headers,
                                      std::string_view name) {
  for (const auto& [k, v] : headers)
    if (k == name) return v;
  return std::nullopt;
}

// Splits "a: b\r\nc: d" into lower-cased name/value pairs; false on a malformed line.
bool parseHeaderLines(std::string_view block, std::vector<std::pair<std::string, std::string>>& out) {
  while (!block.empty()) {
    const std::size_t eol = block.find("\r\n");
    const std::string_view line = block.substr(0, eol);
    block = eol == std::string_view::npos ? std::string_view{} : block.substr(eol + 2);
    if (line.empty()) continue;
    const std::size_t colon = line.find(':');
    // RFC 9112 5.1: no whitespace between the name and the colon; obsolete line folding is refused.
    if (colon == std::string_view::npos || !isToken(line.substr(0, colon))) return false;
    out.emplace_back(lower(line.substr(0, colon)), std::string(trim(line.substr(colon + 1))));
  }
  return true;
}

bool sendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// A JSON error body, so that errors met before any handler runs look like the handler's.
std::string errorBody(std::string_view message) {
  std::string out = R"({"error":")";
  for (unsigned char c : message) {
    if (c == '"' || c == '\\') out += '\\';
    if (c < 0x20) out += ' ';
    else out += static_cast<char>(c);
  }
  return out + "\"}";
}

}  // namespace

std::optional<std::string> Request::header(std::string_view lowerName) const { return findHeader(headers, lowerName); }
std::optional<std::string> ClientResponse::header(std::string_view lowerName) const { return findHeader(headers, lowerName); }

bool Request::keepAlive() const {
  const std::string connection = lower(header("connection").value_or(""));
  if (minorVersion == 0) return connection.find("keep-alive") != std::string::npos;
  return connection.find("close") == std::string::npos;
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string serialize(const Response& r, bool keepAlive) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reasonPhrase(r.status) + "\r\n";
  out += "Content-Type: " + r.contentType + "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
  if (!keepAlive) out += "Connection: close\r\n";
  out += "\r\n";
  out += r.body;
  return out;
}

RequestParser::State RequestParser::fail(int status, std::string message) {
  errorStatus_ = status;
  errorMessage_ = std::move(message);
  return State::Error;
}

RequestParser::State RequestParser::parseHead(std::size_t headEnd) {
  const std::string_view head(buffer_.data(), headEnd);
  const std::size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(400, "malformed request line");
  current_.method = std::string(line.substr(0, sp1));
  current_.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  const std::string_view version = line.substr(sp2 + 1);
  if (!isToken(current_.method)) return fail(400, "malformed method");
  if (version == "HTTP/1.1") current_.minorVersion = 1;
  else if (version == "HTTP/1.0") current_.minorVersion = 0;
  else return fail(505, "only HTTP/1.0 and HTTP/1.1 are supported");
  if (current_.target.empty() || current_.target[0] != '/') return fail(400, "the request target must be a path");
  current_.path = current_.target.substr(0, current_.target.find('?'));
  if (!parseHeaderLines(eol == std::string_view::npos ? std::string_view{} : head.substr(eol + 2), current_.headers))
    return fail(400, "malformed header line");
  if (current_.header("transfer-encoding"))
    return fail(501, "chunked request bodies are not supported: send Content-Length");
  bodyLength_ = 0;
  bool seen = false;
  for (const auto& [k, v] : current_.headers) {
    if (k != "content-length") continue;
    if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), ::isdigit)) return fail(400, "malformed Content-Length");
    const std::size_t n = std::stoull(v);
    if (seen && n != bodyLength_) return fail(400, "conflicting Content-Length headers");
    bodyLength_ = n;
    seen = true;
  }
  if (bodyLength_ > limits_.maxBodyBytes)
    return fail(413, "the body is " + std::to_string(bodyLength_) + " bytes; the limit is " + std::to_string(limits_.maxBodyBytes));
  expectContinue_ = lower(current_.header("expect").value_or("")) == "100-continue" && bodyLength_ > 0;
  headersDone_ = true;
  buffer_.erase(0, headEnd + 4);
  return State::NeedMore;
}

RequestParser::State RequestParser::feed(std::string_view bytes) {
  if (errorStatus_) return State::Error;
  buffer_.append(bytes);
  if (!headersDone_) {
    // Tolerate empty lines before a request (RFC 9112 2.2).
    while (buffer_.rfind("\r\n", 0) == 0) buffer_.erase(0, 2);
    const std::size_t headEnd = buffer_.find("\r\n\r\n");
    if (headEnd == std::string::npos) {
      if (buffer_.size() > limits_.maxHeaderBytes) return fail(431, "the request head is over " + std::to_string(limits_.maxHeaderBytes) + " bytes");
      return State::NeedMore;
    }
    if (headEnd > limits_.maxHeaderBytes) return fail(431, "the request head is over " + std::to_string(limits_.maxHeaderBytes) + " bytes");
    if (parseHead(headEnd) == State::Error) return State::Error;
  }
  if (buffer_.size() < bodyLength_) return State::NeedMore;
  current_.body = buffer_.substr(0, bodyLength_);
  buffer_.erase(0, bodyLength_);
  return State::Complete;
}

Request RequestParser::take() {
  Request out = std::move(current_);
  current_ = Request{};
  headersDone_ = expectContinue_ = continueSent_ = false;
  bodyLength_ = 0;
  return out;
}

// ------------------------------------------------------------------ server

Server::Server(ServerOptions options, Handler handler) : options_(std::move(options)), handler_(std::move(handler)) {}

Server::~Server() {
  stop();
  if (listenFd_ >= 0) ::close(listenFd_);
}

void Server::listen() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options_.port);
  if (int rc = ::getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    throw std::runtime_error("cannot resolve host '" + options_.host + "': " + ::gai_strerror(rc));
  const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool bound = fd >= 0 && ::bind(fd, found->ai_addr, found->ai_addrlen) == 0 && ::listen(fd, 128) == 0;
  const int err = errno;
  ::freeaddrinfo(found);
  if (!bound) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot listen on " + options_.host + ":" + port + ": " + std::strerror(err) +
                             (err == EADDRINUSE ? " (choose another --port)" : ""));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  listenFd_ = fd;
}

bool Server::track(int fd) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (static_cast<int>(connections_.size()) >= options_.maxConnections) return false;
  connections_.insert(fd);
  return true;
}

void Server::untrack(int fd) {
  std::lock_guard<std::mutex> lock(mutex_);
  connections_.erase(fd);
  ::close(fd);
  idle_.notify_all();
}

void Server::run() {
  while (!stopping_) {
    const int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      break;  // the listening socket was shut down by stop()
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (stopping_ || !track(fd)) {
      Response busy{503, "application/json", {}, errorBody("too many connections; retry later")};
      sendAll(fd, serialize(busy, false));
      ::close(fd);
      continue;
    }
    std::thread([this, fd] { serveConnection(fd); }).detach();
  }
}

void Server::serveConnection(int fd) {
  RequestParser parser(options_.limits);
  char buf[64 * 1024];
  bool open = true;
  while (open) {
    RequestParser::State state = parser.feed("");
    while (state == RequestParser::State::NeedMore) {
      if (parser.wantsContinue()) {
        sendAll(fd, "HTTP/1.1 100 Continue\r\n\r\n");
        parser.continueSent();
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, options_.idleTimeoutMs) <= 0) { open = false; break; }  // idle too long
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) { open = false; break; }  // closed by the client, or by stop()
      state = parser.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    }
    if (!open) break;
    if (state == RequestParser::State::Error) {
      Response r{parser.errorStatus(), "application/json", {}, errorBody(parser.errorMessage())};
      sendAll(fd, serialize(r, false));
      break;
    }
    const Request request = parser.take();
    Response response;
    try {
      response = handler_(request);
    } catch (const std::exception& e) {
      // The handler maps every error it knows; anything else still gets an answer.
      response = Response{500, "application/json", {}, errorBody(std::string("internal error: ") + e.what())};
    }
    const bool keepAlive = request.keepAlive() && !stopping_;
    if (!sendAll(fd, serialize(response, keepAlive)) || !keepAlive) break;
  }
  untrack(fd);
}

void Server::stop() {
  if (stopping_.exchange(true)) return;
  if (listenFd_ >= 0) ::shutdown(listenFd_, SHUT_RDWR);
  std::unique_lock<std::mutex> lock(mutex_);
  // Closing the read side wakes idle connections; a request in progress still gets its response.
  for (int fd : connections_) ::shutdown(fd, SHUT_RD);
  idle_.wait(lock, [this] { return connections_.empty(); });
}

// ------------------------------------------------------------------ client

namespace {
int connectTo(const std::string& host, int port, int timeoutMs) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    throw std::runtime_error("cannot resolve '" + host + "': " + ::gai_strerror(rc));
  const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, 0);
  timeval tv{timeoutMs / 1000, (timeoutMs % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const bool ok = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0;
  const int err = errno;
  ::freeaddrinfo(found);
  if (!ok) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot connect to " + host + ":" + std::to_string(port) + ": " + std::strerror(err));
  }
  return fd;
}

ClientResponse parseClientResponse(const std::string& raw) {
  const std::size_t headEnd = raw.find("\r\n\r\n");
  if (headEnd == std::string::npos || raw.compare(0, 7, "HTTP/1.") != 0 || raw.size() < 12)
    throw std::runtime_error("the server's answer is not an HTTP response");
  ClientResponse out;
  out.status = std::atoi(raw.c_str() + 9);
  const std::size_t eol = raw.find("\r\n");
  if (!parseHeaderLines(std::string_view(raw).substr(eol + 2, headEnd - eol - 2), out.headers))
    throw std::runtime_error("the server sent a malformed header");
  out.body = raw.substr(headEnd + 4);
  if (auto length = out.header("content-length")) {
    const std::size_t n = std::stoull(*length);
    if (out.body.size() < n) throw std::runtime_error("the response body was cut short");
    out.body.resize(n);
  }
  return out;
}
}  // namespace

ClientResponse request(const std::string& host, int port, const std::string& method, const std::string& target,
                       const std::string& body, const std::vector<std::pair<std::string, std::string>>& headers,
                       int timeoutMs) {
  const int fd = connectTo(host, port, timeoutMs);
  std::string head = method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n";
  for (const auto& [k, v] : headers) head += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST") head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  const bool sent = sendAll(fd, head + "\r\n" + body);
  std::string raw;
  char buf[64 * 1024];
  ssize_t n = 0;
  while (sent && (n = ::recv(fd, buf, sizeof buf, 0)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  const int err = errno;
  ::close(fd);
  if (!sent) throw std::runtime_error("cannot send the request: " + std::string(std::strerror(err)));
  if (n < 0 && raw.empty()) throw std::runtime_error("no response: " + std::string(std::strerror(err)));
  return parseClientResponse(raw);
}

Url parseUrl(const std::string& url) {
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) throw std::invalid_argument("'" + url + "' is not an http:// URL");
  Url out;
  const std::string rest = url.substr(scheme.size());
  const std::size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  out.target = slash == std::string::npos ? "/" : rest.substr(slash);
  const std::size_t colon = authority.rfind(':');
  out.host = authority.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) || std::stoi(port) > 65535)
      throw std::invalid_argument("'" + url + "' has a bad port");
    out.port = std::stoi(port);
  }
  if (out.host.empty()) throw std::invalid_argument("'" + url + "' names no host");
  return out;
}

}  // namespace edgefleet::http
