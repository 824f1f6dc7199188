// HTTPS server of the CM host on Boost.Beast: one session object per connection, each on its own
// strand; deadlines through beast::tcp_stream::expires_after. See http_server.hpp.
#include "persoflow/cmhost/http_server.hpp"

#include <utility>  // before Asio (GCC 12 + Boost 1.74)

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace persoflow::cmhost {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr const char* kCmpPath = "/.well-known/cmp";
constexpr const char* kCmpProcedurePrefix = "/.well-known/cmp/p/";

HttpReply text_reply(int status, std::string text) {
  return HttpReply{status, "text/plain; charset=utf-8", std::move(text) + "\n"};
}

bool valid_procedure_name(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// Media type without parameters, lower case: "application/pkixcmp; x=y" -> "application/pkixcmp".
std::string media_type(beast::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == ';') break;
    if (c == ' ' || c == '\t') continue;
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

HttpReply route(const HttpRoutes& routes, const http::request<http::string_body>& req) {
  std::string target(req.target());
  auto query = target.find('?');
  if (query != std::string::npos) target.resize(query);
  const bool is_get = req.method() == http::verb::get || req.method() == http::verb::head;
  const bool is_post = req.method() == http::verb::post;

  auto get_only = [&](const std::function<HttpReply()>& fn) {
    if (!fn) return text_reply(404, "not found");
    if (!is_get) return text_reply(405, "method not allowed: use GET");
    return fn();
  };
  if (target == "/crl") return get_only(routes.crl);
  if (target == "/ca") return get_only(routes.ca);
  if (target == "/health") {
    if (!routes.health) return get_only([] { return text_reply(200, "ok"); });
    return get_only(routes.health);
  }

  std::string procedure;
  if (target == kCmpPath || target == std::string(kCmpPath) + "/") {
    procedure.clear();
  } else if (target.rfind(kCmpProcedurePrefix, 0) == 0) {
    procedure = target.substr(std::string(kCmpProcedurePrefix).size());
    if (!procedure.empty() && procedure.back() == '/') procedure.pop_back();
    if (!valid_procedure_name(procedure)) return text_reply(404, "not found: bad procedure name");
  } else {
    return text_reply(404, "not found");
  }
  if (!routes.cmp) return text_reply(404, "not found");
  if (!is_post) return text_reply(405, "method not allowed: CMP requests use POST");
  if (media_type(req[http::field::content_type]) != "application/pkixcmp") {
    return text_reply(415, "unsupported media type: CMP requests are application/pkixcmp");
  }
  return routes.cmp(procedure, req.body());
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, ssl::context& tls, const HttpServerOptions& options,
          const HttpRoutes& routes)
      : stream_(std::move(socket), tls), options_(options), routes_(routes) {}

  void start() {
    beast::get_lowest_layer(stream_).expires_after(options_.handshake_timeout);
    stream_.async_handshake(ssl::stream_base::server,
                            [self = shared_from_this()](beast::error_code ec) {
                              if (ec) return self->close();
                              self->read_request(self->options_.idle_timeout);
                            });
  }

 private:
  void read_request(std::chrono::seconds deadline) {
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(16 * 1024);
    // One deadline covers waiting for and reading the whole request: a slow client cannot hold
    // the connection longer than that.
    beast::get_lowest_layer(stream_).expires_after(
        std::max(deadline, options_.request_timeout));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                       self->on_read(ec);
                     });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return send(text_reply(413, "request too large"), false);
    }
    if (ec == http::error::end_of_stream) return shutdown();
    if (ec) {
      // A parse error on a request that began: tell the client, then close. Transport errors
      // (timeouts, resets, TLS alerts) just close.
      if (ec.category() == http::make_error_code(http::error::bad_target).category() && parser_->got_some()) {
        return send(text_reply(400, "bad request: " + ec.message()), false);
      }
      return close();
    }
    const auto& req = parser_->get();
    HttpReply reply;
    try {
      reply = route(routes_, req);
    } catch (const std::exception& e) {
      reply = text_reply(500, std::string("internal error: ") + e.what());
    }
    if (req.method() == http::verb::head) reply.body.clear();
    send(std::move(reply), req.keep_alive());
  }

  void send(HttpReply reply, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(11);
    res->result(static_cast<http::status>(reply.status));
    res->set(http::field::server, "persoflow-cm");
    if (!reply.content_type.empty()) res->set(http::field::content_type, reply.content_type);
    res->set(http::field::cache_control, "no-store");
    res->body() = std::move(reply.body);
    res->keep_alive(keep_alive);
    res->prepare_payload();
    response_ = res;
    beast::get_lowest_layer(stream_).expires_after(options_.request_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                        self->response_.reset();
                        if (ec) return self->close();
                        if (!keep_alive) return self->shutdown();
                        self->read_request(self->options_.idle_timeout);
                      });
  }

  void shutdown() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
    stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->close(); });
  }

  void close() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  beast::ssl_stream<beast::tcp_stream> stream_;
  const HttpServerOptions& options_;
  const HttpRoutes& routes_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http::response<http::string_body>> response_;
};

}  // namespace

Result<std::pair<std::string, std::uint16_t>> parse_listen_address(const std::string& text) {
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return make_status(Errc::kInvalidArgument, "listen address '" + text +
                                                     "' is not [IPv6]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      return make_status(Errc::kInvalidArgument,
                         "listen address '" + text + "' is not HOST:PORT (e.g. 127.0.0.1:8443)");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    return make_status(Errc::kInvalidArgument, "listen address '" + text + "': bad port");
  }
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  if (ec) {
    return make_status(Errc::kInvalidArgument,
                       "listen address '" + text + "': '" + host + "' is not an IP address");
  }
  return std::make_pair(host, static_cast<std::uint16_t>(std::stoul(port)));
}

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpRoutes routes;
  asio::io_context ioc;
  ssl::context tls{ssl::context::tls_server};
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::uint16_t port = 0;
  std::string host;
  std::mutex mu;
  std::condition_variable cv;
  bool stop_requested = false;
  bool stopped = false;

  void accept() {
    acceptor->async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
      if (!ec) {
        beast::error_code ignored;
        s.set_option(tcp::no_delay(true), ignored);
        std::make_shared<Session>(std::move(s), tls, options, routes)->start();
      }
      accept();
    });
  }
};

HttpServer::HttpServer(HttpServerOptions options, HttpRoutes routes)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->routes = std::move(routes);
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::start() {
  Impl& m = *impl_;
  PF_ASSIGN_OR_RETURN(auto addr, parse_listen_address(m.options.listen));
  beast::error_code ec;
  m.tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                    ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(m.tls.native_handle(), TLS1_2_VERSION);
  m.tls.use_certificate_chain_file(m.options.cert_chain_pem, ec);
  if (ec) {
    return make_status(Errc::kInvalidArgument, "TLS certificate " + m.options.cert_chain_pem +
                                                   ": " + ec.message());
  }
  m.tls.use_private_key_file(m.options.key_pem, ssl::context::pem, ec);
  if (ec) {
    return make_status(Errc::kInvalidArgument,
                       "TLS key " + m.options.key_pem + ": " + ec.message());
  }
  tcp::endpoint endpoint(asio::ip::make_address(addr.first), addr.second);
  m.acceptor.emplace(m.ioc);
  m.acceptor->open(endpoint.protocol(), ec);
  if (!ec) m.acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) m.acceptor->bind(endpoint, ec);
  if (!ec) m.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_status(Errc::kUnavailable,
                       "cannot listen on " + m.options.listen + ": " + ec.message());
  }
  m.port = m.acceptor->local_endpoint().port();
  m.host = addr.first;
  m.accept();
  m.work.emplace(m.ioc.get_executor());
  unsigned n = m.options.threads ? m.options.threads : std::thread::hardware_concurrency();
  if (n == 0) n = 2;
  for (unsigned i = 0; i < n; ++i) {
    m.threads.emplace_back([&m] {
      for (;;) {
        try {
          m.ioc.run();
          return;
        } catch (const std::exception& e) {
          // A handler threw past its own catch: keep serving the other connections.
          std::fprintf(stderr, "persoflow cm: unexpected exception in server thread: %s\n",
                       e.what());
        }
      }
    });
  }
  return Status::ok();
}

std::uint16_t HttpServer::port() const { return impl_->port; }

std::string HttpServer::address() const {
  return impl_->host.find(':') != std::string::npos
             ? "[" + impl_->host + "]:" + std::to_string(impl_->port)
             : impl_->host + ":" + std::to_string(impl_->port);
}

void HttpServer::run_until_signal() {
  Impl& m = *impl_;
  asio::signal_set signals(m.ioc, SIGINT, SIGTERM);
  signals.async_wait([&m](beast::error_code ec, int) {
    if (ec) return;
    std::lock_guard lock(m.mu);
    m.stop_requested = true;
    m.cv.notify_all();
  });
  {
    std::unique_lock lock(m.mu);
    m.cv.wait(lock, [&m] { return m.stop_requested; });
  }
  beast::error_code ignored;
  signals.cancel(ignored);
  stop();
}

void HttpServer::stop() {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.mu);
    if (m.stopped) return;
    m.stopped = true;
    m.stop_requested = true;
    m.cv.notify_all();
  }
  if (m.acceptor) {
    asio::post(m.ioc, [&m] {
      beast::error_code ignored;
      m.acceptor->close(ignored);
    });
  }
  m.work.reset();
  m.ioc.stop();
  for (auto& t : m.threads) {
    if (t.joinable()) t.join();
  }
  m.threads.clear();
}

}  // namespace persoflow::cmhost
