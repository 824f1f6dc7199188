// The card emulator through a real pcscd + vpcd: APDUs answered through SCardTransmit, and the
// persoflow-card-emulator program driven over stdin, seen by the reader watcher.
#include <PCSC/winscard.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "pcscd_fixture.hpp"
#include "persoflow/devices/readers.hpp"
#include "persoflow/sim/card_emulator.hpp"
#include "reader_event_log.hpp"

namespace persoflow::sim {
namespace {

using devices::ReaderEvent;
using persoflow::testing::PcscdFixture;
using persoflow::testing::ReaderEventLog;
using Kind = ReaderEvent::Kind;

// libpcsclite fixes its socket path at the first PC/SC call of the process: point it at the
// private pcscd before any test of this binary runs (tests never use the machine's pcscd).
const bool kPrivatePcscd = (PcscdFixture::use_private_socket(), true);

std::vector<std::uint8_t> transmit(SCARDHANDLE card, DWORD protocol,
                                   const std::vector<std::uint8_t>& apdu) {
  std::vector<std::uint8_t> response(258);
  DWORD size = static_cast<DWORD>(response.size());
  const SCARD_IO_REQUEST* pci = protocol == SCARD_PROTOCOL_T1 ? SCARD_PCI_T1 : SCARD_PCI_T0;
  LONG rv = SCardTransmit(card, pci, apdu.data(), static_cast<DWORD>(apdu.size()), nullptr,
                          response.data(), &size);
  if (rv != SCARD_S_SUCCESS) return {};
  response.resize(size);
  return response;
}

TEST(EmulatorReaderTest, AnswersApdusThroughPcscd) {
  PcscdFixture pcscd;
  pcscd.start();
  CardEmulatorOptions options;
  options.port = pcscd.port();
  options.serial_hex = "0A0B0C0D";
  CardEmulator emulator(options);
  ReaderEventLog log;
  auto watcher = devices::watch_readers(log.callback());
  ASSERT_TRUE(emulator.insert().is_ok());
  ASSERT_TRUE(log.wait_for(Kind::kCardInserted, 0, PcscdFixture::reader_name(0))) << log.dump();

  SCARDCONTEXT context = 0;
  ASSERT_EQ(SCardEstablishContext(SCARD_SCOPE_SYSTEM, nullptr, nullptr, &context), SCARD_S_SUCCESS);
  SCARDHANDLE card = 0;
  DWORD protocol = 0;
  const std::string reader = PcscdFixture::reader_name(0);
  LONG rv = SCardConnect(context, reader.c_str(), SCARD_SHARE_SHARED,
                         SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &card, &protocol);
  ASSERT_EQ(rv, SCARD_S_SUCCESS) << devices::pcsc_error_text(rv) << "\n" << pcscd.log();

  using Bytes = std::vector<std::uint8_t>;
  EXPECT_EQ(transmit(card, protocol, {0x00, 0xA4, 0x04, 0x00, 0x02, 0x3F, 0x00}),
            (Bytes{0x90, 0x00}));
  EXPECT_EQ(transmit(card, protocol, {0x00, 0xCA, 0x9F, 0x7F, 0x00}),
            (Bytes{0x0A, 0x0B, 0x0C, 0x0D, 0x90, 0x00}));
  EXPECT_EQ(transmit(card, protocol, {0x00, 0xCA, 0x00, 0x66, 0x00}), (Bytes{0x6A, 0x88}));
  EXPECT_EQ(transmit(card, protocol, {0x80, 0x50, 0x00, 0x00, 0x00}), (Bytes{0x6D, 0x00}));
  EXPECT_GE(emulator.apdus_answered(), 4);

  SCardDisconnect(card, SCARD_LEAVE_CARD);
  SCardReleaseContext(context);
}

TEST(EmulatorReaderTest, RespondsToShortApdu) {
  CardEmulator emulator(CardEmulatorOptions{});
  EXPECT_EQ(emulator.respond({0x00, 0xA4}), (std::vector<std::uint8_t>{0x67, 0x00}));
}

TEST(EmulatorReaderTest, InsertWithoutVpcdIsUnavailable) {
  CardEmulatorOptions options;
  options.port = persoflow::testing::free_port_pair();
  CardEmulator emulator(options);
  Status status = emulator.insert({}, std::chrono::milliseconds(100));
  EXPECT_EQ(status.code(), make_error_code(Errc::kUnavailable));
  EXPECT_FALSE(emulator.inserted());
  EXPECT_EQ(emulator.insert("3B8G").code(), make_error_code(Errc::kInvalidArgument));
}

// The program, with a pipe to its stdin and one from its stdout.
class EmulatorProcess {
 public:
  explicit EmulatorProcess(const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe");
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    in_ = in[1];
    out_ = out[0];
  }
  ~EmulatorProcess() {
    if (in_ >= 0) ::close(in_);
    if (out_ >= 0) ::close(out_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void send(const std::string& line) {
    std::string text = line + "\n";
    ASSERT_EQ(::write(in_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  // One line of output, waiting up to 10 s; empty on timeout or end.
  std::string read_line() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {};
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[256];
      ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) return {};
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  int close_and_wait() {
    ::close(in_);
    in_ = -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  int pid_ = 0;
  int in_ = -1;
  int out_ = -1;
  std::string buffer_;
};

TEST(EmulatorReaderTest, ProgramInsertsAndRemovesOnCommand) {
  const std::string program = persoflow::testing::binary_dir() + "/persoflow-card-emulator";
  ASSERT_EQ(::access(program.c_str(), X_OK), 0) << program << " is not built";
  PcscdFixture pcscd;
  pcscd.start();
  ReaderEventLog log;
  auto watcher = devices::watch_readers(log.callback());
  const std::string atr = "3B8A8001504552534F464C4F573270";  // "PERSOFLOW2"
  EmulatorProcess emulator({program, "--port", std::to_string(pcscd.port())});
  const std::string reader = PcscdFixture::reader_name(0);
  std::size_t from = 0;
  for (int cycle = 0; cycle < 2; ++cycle) {
    emulator.send("insert " + atr);
    EXPECT_EQ(emulator.read_line(), "inserted " + atr);
    auto inserted = log.wait_for(Kind::kCardInserted, from, reader);
    ASSERT_TRUE(inserted) << log.dump();
    EXPECT_EQ(log.at(*inserted).event.atr_hex, atr);
    emulator.send("status");
    EXPECT_EQ(emulator.read_line(), "inserted " + atr);
    emulator.send("remove");
    EXPECT_EQ(emulator.read_line(), "removed");
    auto removed = log.wait_for(Kind::kCardRemoved, *inserted, reader);
    ASSERT_TRUE(removed) << log.dump();
    from = *removed + 1;
  }
  emulator.send("frobnicate");
  EXPECT_EQ(emulator.read_line().rfind("error: unknown command 'frobnicate'", 0), 0u);
  emulator.send("quit");
  EXPECT_EQ(emulator.close_and_wait(), 0);
}

TEST(EmulatorReaderTest, ProgramRefusesBadOptions) {
  const std::string program = persoflow::testing::binary_dir() + "/persoflow-card-emulator";
  auto bad_atr = persoflow::testing::run({program, "--atr", "3B8Z"});
  EXPECT_EQ(bad_atr.exit_code, 2);
  EXPECT_NE(bad_atr.err.find("--atr is not valid"), std::string::npos) << bad_atr.err;
  auto bad_port = persoflow::testing::run({program, "--port", "70000"});
  EXPECT_EQ(bad_port.exit_code, 2);
  EXPECT_NE(bad_port.err.find("--port"), std::string::npos) << bad_port.err;
  auto help = persoflow::testing::run({program, "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("vpcd"), std::string::npos);
}

}  // namespace
}  // namespace persoflow::sim
