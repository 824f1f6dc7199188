// PIN input from a file descriptor (batch) and from a terminal without echo (a pseudo-terminal
// made the controlling terminal of a child process).
#include "persoflow/devices/pin_input.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

namespace persoflow::devices {
namespace {

struct Pipe {
  int fds[2];
  Pipe() { EXPECT_EQ(::pipe(fds), 0); }
  ~Pipe() {
    if (fds[0] >= 0) ::close(fds[0]);
    if (fds[1] >= 0) ::close(fds[1]);
  }
  void write_and_close(const std::string& s) {
    EXPECT_EQ(::write(fds[1], s.data(), s.size()), static_cast<ssize_t>(s.size()));
    ::close(fds[1]);
    fds[1] = -1;
  }
};

TEST(PinInput, FromFileDescriptor) {
  {
    Pipe p;
    p.write_and_close("1234\n");
    auto pin = read_secret_from_fd(p.fds[0]);
    ASSERT_TRUE(pin.is_ok()) << pin.status().message();
    EXPECT_EQ(pin->view(), "1234");
  }
  {
    Pipe p;
    p.write_and_close("s3cret with spaces\r\n");
    EXPECT_EQ(read_secret_from_fd(p.fds[0])->view(), "s3cret with spaces");
  }
  {
    Pipe p;
    p.write_and_close("99");  // no newline at the end
    EXPECT_EQ(read_secret_from_fd(p.fds[0])->view(), "99");
  }
  {
    // One line per read: the SO PIN and the user PIN on one descriptor.
    Pipe p;
    p.write_and_close("11111111\n2222\n");
    EXPECT_EQ(read_secret(p.fds[0], "unused")->view(), "11111111");
    EXPECT_EQ(read_secret(p.fds[0], "unused")->view(), "2222");
  }
}

TEST(PinInput, RefusesEmptyLongAndClosed) {
  {
    Pipe p;
    p.write_and_close("\n");
    auto pin = read_secret_from_fd(p.fds[0]);
    ASSERT_FALSE(pin.is_ok());
    EXPECT_EQ(pin.status().message(),
              "no PIN given on file descriptor " + std::to_string(p.fds[0]));
  }
  {
    Pipe p;
    p.write_and_close(std::string(300, 'x') + "\n");
    auto pin = read_secret_from_fd(p.fds[0]);
    ASSERT_FALSE(pin.is_ok());
    EXPECT_NE(pin.status().message().find("longer than 256"), std::string::npos);
  }
  auto closed = read_secret_from_fd(987);
  ASSERT_FALSE(closed.is_ok());
  EXPECT_EQ(closed.status().message(), "--pin-fd 987: no such open file descriptor");
}

TEST(PinInput, SecretIsClearedWhenMovedOrCleared) {
  Secret a(std::string("topsecret"));
  Secret b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT: checking the moved-from state on purpose
  EXPECT_EQ(b.view(), "topsecret");
  b.clear();
  EXPECT_TRUE(b.empty());
}

// Reads everything the pty master gives until `want` is seen or 5 s pass.
std::string read_until(int master, const std::string& want, std::string seen = "") {
  for (int i = 0; i < 50 && seen.find(want) == std::string::npos; ++i) {
    pollfd pfd{master, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    char buf[256];
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<std::size_t>(n));
  }
  return seen;
}

TEST(PinInput, FromTerminalWithoutEcho) {
  int result_pipe[2];
  ASSERT_EQ(::pipe(result_pipe), 0);
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child: the pty is its controlling terminal, so /dev/tty is the pty.
    auto pin = read_secret_from_tty("Signature PIN: ");
    std::string out =
        pin.is_ok() ? "OK:" + std::string(pin->view()) : "ERR:" + pin.status().message();
    (void)!::write(result_pipe[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(result_pipe[1]);
  std::string seen = read_until(master, "Signature PIN: ");
  ASSERT_NE(seen.find("Signature PIN: "), std::string::npos) << seen;
  ASSERT_EQ(::write(master, "4711\n", 5), 5);
  pollfd done{result_pipe[0], POLLIN, 0};
  if (::poll(&done, 1, 5000) != 1) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    FAIL() << "the child did not answer within 5 s; the terminal showed: " << seen;
  }
  char buf[256];
  ssize_t n = ::read(result_pipe[0], buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)), "OK:4711");
  seen = read_until(master, "\n", seen);
  EXPECT_EQ(seen.find("4711"), std::string::npos) << "the PIN was echoed: " << seen;
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(master);
  ::close(result_pipe[0]);
}

}  // namespace
}  // namespace persoflow::devices
