// The vpcd card emulator (see card_emulator.hpp): blocking POSIX sockets on the emulator's own
// thread; remove() unblocks that thread with shutdown() on the socket.
#include "persoflow/sim/card_emulator.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace persoflow::sim {
namespace {

using namespace std::chrono_literals;

bool read_all(int fd, std::uint8_t* data, std::size_t size) {
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::recv(fd, data + done, size - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
    // Quick ACK is not sticky on Linux: set it again after every read.
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
  }
  return true;
}

bool send_message(int fd, const std::vector<std::uint8_t>& payload) {
  std::vector<std::uint8_t> frame;
  frame.reserve(payload.size() + 2);
  frame.push_back(static_cast<std::uint8_t>(payload.size() >> 8));
  frame.push_back(static_cast<std::uint8_t>(payload.size() & 0xFF));
  frame.insert(frame.end(), payload.begin(), payload.end());
  std::size_t done = 0;
  while (done < frame.size()) {
    ssize_t n = ::send(fd, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

enum Control : std::uint8_t { kPowerOff = 0, kPowerOn = 1, kReset = 2, kGetAtr = 4 };

}  // namespace

Result<std::vector<std::uint8_t>> parse_hex(const std::string& text) {
  std::vector<std::uint8_t> out;
  int high = -1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == ' ' || c == ':') continue;
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v = c - 'A' + 10;
    else
      return make_status(Errc::kInvalidArgument, "not a hex digit at position " +
                                                     std::to_string(i + 1) + " of '" + text + "'");
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<std::uint8_t>(high << 4 | v));
      high = -1;
    }
  }
  if (high >= 0)
    return make_status(Errc::kInvalidArgument, "odd number of hex digits in '" + text + "'");
  return out;
}

CardEmulator::CardEmulator(CardEmulatorOptions options) : options_(std::move(options)) {
  auto atr = parse_hex(options_.atr_hex);
  PF_CHECK(atr.is_ok() && !atr->empty() && atr->size() <= 33,
           "the emulator's ATR is not valid hex");
  atr_ = *atr;
  auto serial = parse_hex(options_.serial_hex);
  PF_CHECK(serial.is_ok(), "the emulator's serial is not valid hex");
  serial_ = *serial;
}

CardEmulator::~CardEmulator() { remove(); }

int CardEmulator::connect_once() const {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(options_.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
  return fd;
}

Status CardEmulator::insert(const std::string& atr_hex, std::chrono::milliseconds timeout) {
  if (thread_.joinable()) return make_status(Errc::kAlreadyExists, "the card is already inserted");
  if (!atr_hex.empty()) {
    auto atr = parse_hex(atr_hex);
    if (!atr.is_ok()) return atr.status().with_context("ATR");
    if (atr->empty() || atr->size() > 33) {
      return make_status(Errc::kInvalidArgument,
                         "an ATR has 1 to 33 bytes, not " + std::to_string(atr->size()));
    }
    std::lock_guard lock(mutex_);
    atr_ = *atr;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto backoff = 20ms;
  int fd = -1;
  while ((fd = connect_once()) < 0) {
    if (std::chrono::steady_clock::now() + backoff > deadline) {
      return make_status(Errc::kUnavailable,
                         "no vpcd listening on 127.0.0.1:" + std::to_string(options_.port) +
                             " (is pcscd running with the vpcd driver?)");
    }
    std::this_thread::sleep_for(backoff);  // nothing to await: vpcd gives no sign before listening
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
  {
    std::lock_guard lock(mutex_);
    removing_ = false;
    fd_ = fd;
    ++connections_;
  }
  thread_ = std::thread([this, fd] { run(fd); });
  return Status::ok();
}

void CardEmulator::remove() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    removing_ = true;
    if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
    cv_.notify_all();
  }
  thread_.join();
}

int CardEmulator::connections() const {
  std::lock_guard lock(mutex_);
  return connections_;
}

int CardEmulator::apdus_answered() const {
  std::lock_guard lock(mutex_);
  return apdus_;
}

void CardEmulator::run(int fd) {
  auto backoff = 20ms;
  while (true) {
    serve(fd);
    {
      std::lock_guard lock(mutex_);
      fd_ = -1;
    }
    ::close(fd);
    // vpcd dropped the card (pcscd stopped) or remove() was called: reconnect in the first case.
    while (true) {
      {
        std::unique_lock lock(mutex_);
        if (cv_.wait_for(lock, backoff, [this] { return removing_; })) return;
      }
      fd = connect_once();
      if (fd >= 0) break;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
    }
    std::lock_guard lock(mutex_);
    if (removing_) {
      ::close(fd);
      return;
    }
    fd_ = fd;
    ++connections_;
    backoff = 20ms;
  }
}

bool CardEmulator::serve(int fd) {
  while (true) {
    std::uint8_t header[2];
    if (!read_all(fd, header, 2)) return true;
    const std::size_t size = static_cast<std::size_t>(header[0]) << 8 | header[1];
    std::vector<std::uint8_t> payload(size);
    if (size > 0 && !read_all(fd, payload.data(), size)) return true;
    if (size == 0) return false;
    if (size == 1) {
      if (payload[0] == kGetAtr) {
        std::vector<std::uint8_t> atr;
        {
          std::lock_guard lock(mutex_);
          atr = atr_;
        }
        if (!send_message(fd, atr)) return true;
      }
      // kPowerOff, kPowerOn, kReset: vpcd expects no answer; the card keeps no power state.
      continue;
    }
    {
      // Counted before the answer leaves, so a caller holding the answer sees the count.
      std::lock_guard lock(mutex_);
      ++apdus_;
    }
    if (!send_message(fd, respond(payload))) return true;
  }
}

std::vector<std::uint8_t> CardEmulator::respond(const std::vector<std::uint8_t>& apdu) const {
  if (apdu.size() < 4) return {0x67, 0x00};
  const std::uint8_t ins = apdu[1];
  const unsigned p1p2 = static_cast<unsigned>(apdu[2]) << 8 | apdu[3];
  switch (ins) {
    case 0xA4:  // SELECT
      return {0x90, 0x00};
    case 0xCA:  // GET DATA
      if (p1p2 == 0x9F7F) {
        std::vector<std::uint8_t> out = serial_;
        out.push_back(0x90);
        out.push_back(0x00);
        return out;
      }
      return {0x6A, 0x88};
    default:
      return {0x6D, 0x00};
  }
}

}  // namespace persoflow::sim
