// `persoflow cm serve`: runs the CM host's HTTPS + CMP service on a CM directory made by
// `persoflow cm init`, until SIGINT or SIGTERM. Prints "listening on HOST:PORT" once bound (with
// --listen 127.0.0.1:0 the port is the one the system picked), so scripts and tests can wait for
// that line.
#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "cm_subcommands.hpp"
#include "persoflow/cmhost/cm_host.hpp"
#include "persoflow/cmhost/cmp_service.hpp"
#include "persoflow/cmhost/http_server.hpp"

namespace persoflow::apps {
namespace {

namespace po = boost::program_options;

int run_cm_serve(int argc, char** argv) {
  std::string dir;
  std::string listen;
  unsigned threads = 0;
  bool log_cmp = false;
  po::options_description options("persoflow cm serve --dir DIR [--listen 127.0.0.1:PORT]");
  options.add_options()("help,h", "show this help")(
      "dir", po::value(&dir),
      "CM directory made by `persoflow cm init` (or $PERSOFLOW_CM_DIR)")(
      "listen", po::value(&listen),
      "address and port to listen on (default: the configuration's, 127.0.0.1:8443); port 0 "
      "picks a free one")("threads", po::value(&threads),
                          "server threads (default: one per core)")(
      "log-cmp", po::bool_switch(&log_cmp), "print OpenSSL's CMP log lines on stderr");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "persoflow cm serve: " << e.what() << "\n" << options;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << "Serves CMP (RFC 4210) over HTTPS (RFC 6712) for the CM host in DIR:\n"
                 "  POST /.well-known/cmp, POST /.well-known/cmp/p/<procedure>,\n"
                 "  GET /crl, GET /ca, GET /health.\n\n"
              << options;
    return 0;
  }
  if (dir.empty()) {
    if (const char* env = std::getenv("PERSOFLOW_CM_DIR")) dir = env;
  }
  if (dir.empty()) {
    std::cerr << "persoflow cm serve: --dir DIR is required (a directory made by `persoflow cm "
                 "init --dir DIR`)\n";
    return 2;
  }
  auto host = cmhost::CmHost::open(dir);
  if (!host.is_ok()) {
    std::cerr << "persoflow cm serve: " << host.status().message() << "\n";
    return 1;
  }
  cmhost::CmHost& cm = **host;
  cmhost::CmpServiceOptions service_options;
  service_options.log_cmp_errors = log_cmp;
  cmhost::CmpService service(cm, service_options);
  cmhost::HttpServerOptions server_options;
  server_options.listen = listen.empty() ? cm.config().listen : listen;
  server_options.cert_chain_pem = cm.tls_certificate_path();
  server_options.key_pem = cm.tls_key_path();
  server_options.threads = threads;
  cmhost::HttpServer server(server_options, cmhost::cm_routes(cm, service));
  Status started = server.start();
  if (!started.is_ok()) {
    std::cerr << "persoflow cm serve: " << started.message() << "\n";
    return 1;
  }
  (void)cm.audit("cli", "serve", "listening on " + server.address());
  std::printf("listening on %s\n", server.address().c_str());
  std::fflush(stdout);
  server.run_until_signal();
  std::printf("stopped\n");
  std::fflush(stdout);
  return 0;
}

}  // namespace
}  // namespace persoflow::apps

PF_REGISTER_CM_SUBCOMMAND(serve, "serve", "run the CMP over HTTPS service", persoflow::apps::run_cm_serve);
