// State-directory files; see state_files.hpp.
#include "persoflow/actors/state_files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace persoflow::actors {

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_status(Errc::kNotFound, "cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Result<std::string> first_line(const std::string& path) {
  PF_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::string line = text.substr(0, text.find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) return make_status(Errc::kInvalidArgument, path + " is empty");
  return line;
}

Status write_durably(const std::string& path, const std::string& data, mode_t mode) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return make_status(Errc::kUnavailable, "cannot create " + tmp);
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      ::close(fd);
      return make_status(Errc::kUnavailable, "cannot write " + tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return make_status(Errc::kUnavailable, "cannot flush " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return make_status(Errc::kUnavailable, "cannot rename " + tmp + " to " + path);
  }
  int dir = ::open(std::filesystem::path(path).parent_path().c_str(),
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
  return Status::ok();
}

bool safe_file_name(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

}  // namespace persoflow::actors
