// Synchronous HTTPS client on Boost.Beast; see https_client.hpp.
#include "persoflow/protocol/https_client.hpp"

#include <utility>  // before Asio (GCC 12 + Boost 1.74)

#include <openssl/x509v3.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>

namespace persoflow::protocol {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
}  // namespace

struct HttpsClient::Impl {
  HttpsClientOptions options;
  asio::io_context ioc;
  ssl::context tls{ssl::context::tls_client};
  std::optional<beast::ssl_stream<beast::tcp_stream>> stream;
  beast::flat_buffer buffer;
  Status setup_status;

  // Runs one asynchronous operation to its end on this client's own io_context. Only the
  // asynchronous operations of beast::tcp_stream honour expires_after(): a synchronous read from
  // a CM host that never answers would block forever.
  template <typename Start>
  beast::error_code run_async(Start&& start) {
    beast::error_code result = asio::error::would_block;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  Status connect() {
    stream.emplace(ioc, tls);
    beast::error_code ec;
    SSL* ssl_handle = stream->native_handle();
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_handle);
    asio::ip::make_address(options.host, ec);
    if (!ec) {
      X509_VERIFY_PARAM_set1_ip_asc(param, options.host.c_str());
    } else {
      ec = {};
      X509_VERIFY_PARAM_set1_host(param, options.host.c_str(), 0);
      SSL_set_tlsext_host_name(ssl_handle, options.host.c_str());
    }
    tcp::resolver resolver(ioc);
    auto endpoints = resolver.resolve(options.host, std::to_string(options.port), ec);
    if (ec) {
      return make_status(Errc::kUnavailable, "resolving " + options.host + ": " + ec.message());
    }
    auto& lowest = beast::get_lowest_layer(*stream);
    lowest.expires_after(options.timeout);
    ec = run_async([&](auto handler) { lowest.async_connect(endpoints, handler); });
    if (ec) {
      stream.reset();
      return make_status(Errc::kUnavailable, "connecting to " + options.host + ":" +
                                                 std::to_string(options.port) + ": " +
                                                 ec.message());
    }
    lowest.socket().set_option(tcp::no_delay(true), ec);
    lowest.expires_after(options.timeout);
    ec = run_async(
        [&](auto handler) { stream->async_handshake(ssl::stream_base::client, handler); });
    if (ec) {
      stream.reset();
      return make_status(Errc::kUnavailable, "TLS handshake with " + options.host + ":" +
                                                 std::to_string(options.port) + ": " +
                                                 ec.message());
    }
    buffer.clear();
    return Status::ok();
  }

  Result<HttpResponse> exchange(http::request<http::string_body>& req, bool* retryable) {
    *retryable = false;
    bool fresh = false;
    if (!stream) {
      PF_RETURN_IF_ERROR(connect());
      fresh = true;
    }
    beast::error_code ec;
    auto& lowest = beast::get_lowest_layer(*stream);
    lowest.expires_after(options.timeout);
    ec = run_async([&](auto handler) { http::async_write(*stream, req, handler); });
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    if (!ec) ec = run_async([&](auto handler) { http::async_read(*stream, buffer, parser, handler); });
    if (ec) {
      stream.reset();
      // A kept-alive connection the server closed meanwhile: one new connection may help.
      *retryable = !fresh && !parser.got_some();
      return make_status(ec == beast::error::timeout ? Errc::kTimeout : Errc::kUnavailable,
                         std::string(req.method_string()) + " " + std::string(req.target()) +
                             " to " + options.host + ":" + std::to_string(options.port) + ": " +
                             ec.message());
    }
    auto res = parser.release();
    HttpResponse out;
    out.status = static_cast<int>(res.result_int());
    out.content_type = std::string(res[http::field::content_type]);
    out.body = std::move(res.body());
    if (!res.keep_alive()) stream.reset();
    return out;
  }

  Result<HttpResponse> request(http::verb verb, const std::string& target,
                               const std::string& content_type, const std::string& body) {
    PF_RETURN_IF_ERROR(setup_status);
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, options.host);
    req.set(http::field::user_agent, "persoflow");
    if (!content_type.empty()) req.set(http::field::content_type, content_type);
    req.body() = body;
    req.keep_alive(true);
    req.prepare_payload();
    bool retryable = false;
    auto result = exchange(req, &retryable);
    if (!result.is_ok() && retryable) result = exchange(req, &retryable);
    return result;
  }
};

HttpsClient::HttpsClient(HttpsClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  beast::error_code ec;
  impl_->tls.set_verify_mode(ssl::verify_peer);
  SSL_CTX_set_min_proto_version(impl_->tls.native_handle(), TLS1_2_VERSION);
  impl_->tls.load_verify_file(impl_->options.trusted_ca_pem, ec);
  if (ec) {
    impl_->setup_status = make_status(Errc::kInvalidArgument, "trusted CA file " +
                                                                  impl_->options.trusted_ca_pem +
                                                                  ": " + ec.message());
  }
}

HttpsClient::~HttpsClient() = default;

Result<HttpResponse> HttpsClient::post(const std::string& target, const std::string& content_type,
                                       const std::string& body) {
  return impl_->request(http::verb::post, target, content_type, body);
}

Result<HttpResponse> HttpsClient::get(const std::string& target) {
  return impl_->request(http::verb::get, target, {}, {});
}

void HttpsClient::disconnect() { impl_->stream.reset(); }

}  // namespace persoflow::protocol
