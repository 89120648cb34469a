#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <atomic>
#include <thread>

#include "http.hpp"

using namespace edgefleet::http;

TEST_CASE("a request arriving in pieces is parsed once it is whole") {
  RequestParser p;
  CHECK(p.feed("POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\nContent-") == RequestParser::State::NeedMore);
  CHECK(p.feed("Length: 5\r\nX-Thing:  v  \r\n\r\nhel") == RequestParser::State::NeedMore);
  REQUIRE(p.feed("lo") == RequestParser::State::Complete);
  const Request r = p.take();
  CHECK(r.method == "POST");
  CHECK(r.target == "/v2/models/m/infer?x=1");
  CHECK(r.path == "/v2/models/m/infer");
  CHECK(r.header("x-thing") == "v");
  CHECK(r.body == "hello");
  CHECK(r.keepAlive());
}

TEST_CASE("pipelined requests are parsed one after the other") {
  RequestParser p;
  REQUIRE(p.feed("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\n\r\n") == RequestParser::State::Complete);
  CHECK(p.take().path == "/a");
  REQUIRE(p.feed("") == RequestParser::State::Complete);
  const Request b = p.take();
  CHECK(b.path == "/b");
  CHECK_FALSE(b.keepAlive());  // HTTP/1.0 closes unless asked
  CHECK(p.feed("") == RequestParser::State::NeedMore);
}

TEST_CASE("bad requests get the status that says why") {
  auto status = [](const std::string& bytes, Limits limits = {}) {
    RequestParser p(limits);
    return p.feed(bytes) == RequestParser::State::Error ? p.errorStatus() : 0;
  };
  CHECK(status("GARBAGE\r\n\r\n") == 400);
  CHECK(status("GET / HTTP/2.0\r\n\r\n") == 505);
  CHECK(status("GET http://x/ HTTP/1.1\r\n\r\n") == 400);
  CHECK(status("GET / HTTP/1.1\r\nBad Header : x\r\n\r\n") == 400);
  CHECK(status("POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n") == 400);
  CHECK(status("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n") == 400);
  CHECK(status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == 501);
  CHECK(status("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", Limits{1024, 10}) == 413);
  CHECK(status("GET / HTTP/1.1\r\nX: " + std::string(200, 'a'), Limits{100, 10}) == 431);
}

TEST_CASE("Expect: 100-continue is noticed once the headers are in") {
  RequestParser p;
  CHECK(p.feed("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n") == RequestParser::State::NeedMore);
  CHECK(p.wantsContinue());
  p.continueSent();
  CHECK_FALSE(p.wantsContinue());
  CHECK(p.feed("ok") == RequestParser::State::Complete);
}

TEST_CASE("responses are serialized with a length and, when closing, Connection: close") {
  Response r{404, "application/json", {{"Allow", "GET"}}, "{}"};
  CHECK(serialize(r, true) == "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nAllow: GET\r\n\r\n{}");
  CHECK(serialize(r, false).find("Connection: close\r\n") != std::string::npos);
}

TEST_CASE("URLs for the probe are parsed and bad ones refused") {
  const Url u = parseUrl("http://127.0.0.1:8080/v2/health/ready");
  CHECK(u.host == "127.0.0.1");
  CHECK(u.port == 8080);
  CHECK(u.target == "/v2/health/ready");
  CHECK(parseUrl("http://box").port == 80);
  CHECK_THROWS_AS(parseUrl("https://box/"), std::invalid_argument);
  CHECK_THROWS_AS(parseUrl("http://box:99999/"), std::invalid_argument);
  CHECK_THROWS_AS(parseUrl("http://:80/"), std::invalid_argument);
}

namespace {

struct RunningServer {
  explicit RunningServer(Handler handler, ServerOptions options = {}) : server([&] { options.port = 0; return options; }(), std::move(handler)) {
    server.listen();
    thread = std::thread([this] { server.run(); });
  }
  ~RunningServer() {
    server.stop();
    thread.join();
  }
  Server server;
  std::thread thread;
};

// A raw connection, for what the one-shot client cannot do (keep-alive, pipelining).
struct RawConnection {
  explicit RawConnection(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawConnection() { ::close(fd); }
  void send(const std::string& s) const { REQUIRE(::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size())); }
  // Reads until `count` complete responses (by Content-Length) are in, or the peer closes.
  std::string receive(int count) const {
    std::string all;
    char buf[4096];
    while (count > 0) {
      std::size_t pos = 0;
      int complete = 0;
      while (true) {
        const auto head = all.find("\r\n\r\n", pos);
        if (head == std::string::npos) break;
        const auto cl = all.find("Content-Length: ", pos);
        const std::size_t end = head + 4 + std::stoul(all.substr(cl + 16));
        if (all.size() < end) break;
        ++complete;
        pos = end;
      }
      if (complete >= count) break;
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      all.append(buf, static_cast<std::size_t>(n));
    }
    return all;
  }
  int fd;
};

Response echoPath(const Request& r) { return Response{200, "text/plain", {}, r.method + " " + r.path + " " + r.body}; }

}  // namespace

TEST_CASE("the server answers over a real socket and keeps the connection alive") {
  RunningServer running(echoPath);
  const ClientResponse r = request("127.0.0.1", running.server.port(), "POST", "/x", "body");
  CHECK(r.status == 200);
  CHECK(r.body == "POST /x body");
  CHECK(r.header("content-type") == "text/plain");

  RawConnection conn(running.server.port());
  conn.send("GET /one HTTP/1.1\r\n\r\n");
  CHECK(conn.receive(1).find("GET /one ") != std::string::npos);
  conn.send("GET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\nConnection: close\r\n\r\n");  // same connection, pipelined
  const std::string both = conn.receive(2);
  CHECK(both.find("GET /two ") < both.find("GET /three "));
  CHECK(both.find("Connection: close") != std::string::npos);
}

TEST_CASE("a malformed request is answered with a JSON error and the connection closed") {
  RunningServer running(echoPath);
  RawConnection conn(running.server.port());
  conn.send("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  const std::string answer = conn.receive(1);
  CHECK(answer.rfind("HTTP/1.1 501 Not Implemented\r\n", 0) == 0);
  CHECK(answer.find(R"({"error":"chunked request bodies are not supported: send Content-Length"})") != std::string::npos);
  char c;
  CHECK(::recv(conn.fd, &c, 1, 0) == 0);  // closed
}

TEST_CASE("a client that expects 100-continue gets it, then its answer") {
  RunningServer running(echoPath);
  RawConnection conn(running.server.port());
  conn.send("POST /c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
  char buf[64];
  const ssize_t n = ::recv(conn.fd, buf, sizeof buf, 0);
  REQUIRE(n > 0);
  CHECK(std::string(buf, static_cast<std::size_t>(n)) == "HTTP/1.1 100 Continue\r\n\r\n");
  conn.send("abc");
  CHECK(conn.receive(1).find("POST /c abc") != std::string::npos);
}

TEST_CASE("a handler that throws still gets the client an answer") {
  RunningServer running([](const Request&) -> Response { throw std::runtime_error("boom \"quoted\""); });
  const ClientResponse r = request("127.0.0.1", running.server.port(), "GET", "/");
  CHECK(r.status == 500);
  CHECK(r.body == R"({"error":"internal error: boom \"quoted\""})");
}

TEST_CASE("connections beyond the limit are turned away with 503") {
  ServerOptions options;
  options.maxConnections = 1;
  RunningServer running(echoPath, options);
  RawConnection held(running.server.port());
  held.send("GET /held HTTP/1.1\r\n\r\n");
  REQUIRE(held.receive(1).find("/held") != std::string::npos);  // now it is counted
  const ClientResponse r = request("127.0.0.1", running.server.port(), "GET", "/");
  CHECK(r.status == 503);
}

TEST_CASE("stop() lets a request in progress finish and closes idle connections") {
  std::atomic<bool> entered{false}, release{false};
  auto server = std::make_unique<RunningServer>([&](const Request& r) {
    entered = true;
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return echoPath(r);
  });
  const int port = server->server.port();
  RawConnection idle(port);
  RawConnection busy(port);
  busy.send("GET /slow HTTP/1.1\r\n\r\n");
  while (!entered) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::thread stopper([&] { server.reset(); });
  // stop() shuts the listening socket first: once a new connection is refused, it has begun.
  while (true) {
    try {
      request("127.0.0.1", port, "GET", "/", "", {}, 1000);
    } catch (const std::runtime_error&) {
      break;
    }
  }
  release = true;
  stopper.join();
  CHECK(busy.receive(1).find("GET /slow") != std::string::npos);
  char c;
  CHECK(::recv(idle.fd, &c, 1, 0) == 0);
}

TEST_CASE("listening on a port in use says so") {
  RunningServer first(echoPath);
  ServerOptions options;
  options.port = first.server.port();
  Server second(options, echoPath);
  CHECK_THROWS_WITH_AS(second.listen(), doctest::Contains("choose another --port"), std::runtime_error);
}
