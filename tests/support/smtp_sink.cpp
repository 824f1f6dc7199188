// The aiosmtpd sink (see smtp_sink.hpp). The Python side writes each message's envelope to
// NNNNNN.env and then its content to NNNNNN.eml through a rename, so a reader that sees the .eml
// sees a complete message. The child's output goes to a log file (no pipe to drain); the port is
// read from that file's "listening on" line.
#include "smtp_sink.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace persoflow::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kPython = "/usr/bin/python3";

constexpr const char* kServerScript = R"PY(
import asyncio, os, sys
from aiosmtpd.smtp import SMTP

out_dir = sys.argv[1]

class Sink:
    def __init__(self):
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().endswith('@refuse.invalid'):
            return '550 5.1.1 mailbox unavailable'
        if address.lower().endswith('@later.invalid'):
            return '451 4.3.0 try again later'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(out_dir, '%06d' % self.count)
        with open(base + '.env', 'w', encoding='utf-8') as f:
            f.write(envelope.mail_from + '\n')
            for rcpt in envelope.rcpt_tos:
                f.write(rcpt + '\n')
        content = envelope.content
        if isinstance(content, str):
            content = content.encode('utf-8')
        with open(base + '.tmp', 'wb') as f:
            f.write(content)
        os.replace(base + '.tmp', base + '.eml')
        return '250 2.0.0 message accepted'

async def main():
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname='sink.localdomain', enable_SMTPUTF8=True),
        host='127.0.0.1', port=0)
    port = server.sockets[0].getsockname()[1]
    print('listening on 127.0.0.1:%d' % port, flush=True)
    await server.serve_forever()

asyncio.run(main())
)PY";

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool reap(int pid, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || r < 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string ReceivedMail::header(const std::string& name) const {
  const std::string wanted = lower(name) + ":";
  std::size_t pos = 0;
  while (pos < data.size()) {
    std::size_t end = data.find("\r\n", pos);
    if (end == std::string::npos) end = data.size();
    if (end == pos) break;  // the blank line: end of the headers
    std::string line = data.substr(pos, end - pos);
    if (lower(line.substr(0, wanted.size())) == wanted) {
      std::string value = line.substr(wanted.size());
      value.erase(0, value.find_first_not_of(' '));
      return value;
    }
    pos = end + 2;
  }
  return {};
}

std::string ReceivedMail::body() const {
  std::size_t blank = data.find("\r\n\r\n");
  return blank == std::string::npos ? std::string() : data.substr(blank + 4);
}

SmtpSink::SmtpSink()
    : messages_dir_(std::make_unique<TempDir>("persoflow-smtp")),
      log_dir_(std::make_unique<TempDir>("persoflow-smtp-log")) {}

SmtpSink::~SmtpSink() { stop(); }

void SmtpSink::start() {
  if (pid_ > 0) return;
  if (::access(kPython, X_OK) != 0) {
    throw std::runtime_error(std::string(kPython) +
                             " not found: install python3-aiosmtpd (scripts/setup)");
  }
  const std::string log_path = log_dir_->file("server.log");
  const std::string dir = directory();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    const char* argv[] = {kPython, "-c", kServerScript, dir.c_str(), nullptr};
    ::execv(kPython, const_cast<char* const*>(argv));
    ::_exit(127);
  }
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  const std::string marker = "listening on 127.0.0.1:";
  while (std::chrono::steady_clock::now() < deadline) {
    std::string text = read_file(log_path);
    auto at = text.find(marker);
    if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
      port_ = static_cast<std::uint16_t>(std::stoi(text.substr(at + marker.size())));
      return;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      throw std::runtime_error("the SMTP sink exited at start:\n" + read_file(log_path));
    }
    std::this_thread::sleep_for(20ms);
  }
  stop();
  throw std::runtime_error("the SMTP sink did not listen within 15 s:\n" + read_file(log_path));
}

void SmtpSink::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  if (!reap(pid_, 10s)) {
    ::kill(pid_, SIGKILL);
    reap(pid_, 10s);
  }
  pid_ = 0;
}

std::vector<ReceivedMail> SmtpSink::messages() const {
  std::vector<std::filesystem::path> names;
  for (const auto& entry : std::filesystem::directory_iterator(messages_dir_->path())) {
    if (entry.path().extension() == ".eml") names.push_back(entry.path());
  }
  std::sort(names.begin(), names.end());
  std::vector<ReceivedMail> out;
  for (const auto& eml : names) {
    ReceivedMail mail;
    mail.data = read_file(eml);
    std::istringstream env(read_file(std::filesystem::path(eml).replace_extension(".env")));
    std::getline(env, mail.mail_from);
    for (std::string line; std::getline(env, line);) {
      if (!line.empty()) mail.rcpt_to.push_back(line);
    }
    out.push_back(std::move(mail));
  }
  return out;
}

std::vector<ReceivedMail> SmtpSink::wait_for(std::size_t count,
                                             std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto mails = messages();
    if (mails.size() >= count) return mails;
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("the SMTP sink received " + std::to_string(mails.size()) +
                               " messages, not " + std::to_string(count) + "; its log:\n" + log());
    }
    std::this_thread::sleep_for(20ms);
  }
}

std::string SmtpSink::log() const { return read_file(log_dir_->file("server.log")); }

}  // namespace persoflow::testing
