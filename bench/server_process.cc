// Copyright 2026 The cbloss Authors.

#include "bench/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

extern char** environ;

namespace cbloss::testing {
namespace {

constexpr absl::Duration kStartTimeout = absl::Seconds(30);

std::string MakeTempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/cbloss-server-XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made != nullptr ? std::string(made) : std::string();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// True once every thread of `pid` is in the stopped state ('T' in
// /proc/PID/task/TID/stat): SIGSTOP takes effect asynchronously.
bool AllThreadsStopped(pid_t pid) {
  std::error_code error;
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
    const std::string stat = ReadAll(task.path().string() + "/stat");
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
    const char state = stat[paren + 2];
    if (state != 'T' && state != 't') return false;
  }
  return !error;
}

}  // namespace

ServerProcess::ServerProcess(ServerProcessOptions options)
    : options_(std::move(options)), dir_(MakeTempDir()) {}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) Stop(absl::Seconds(5));
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
}

absl::Status ServerProcess::Start(const std::vector<std::string>& extra_flags) {
  if (dir_.empty()) return absl::InternalError("mkdtemp failed");
  if (pid_ > 0) return absl::FailedPreconditionError("already running");
  const std::string port_file = dir_ + "/port";
  std::filesystem::remove(port_file);
  std::vector<std::string> args = {
      options_.binary.empty() ? CBLOSS_SERVER_PATH : options_.binary,
      "--listen=127.0.0.1:0",
      "--port_file=" + port_file,
      "--data_dir=" + dir_ + "/data",
  };
  args.insert(args.end(), options_.flags.begin(), options_.flags.end());
  args.insert(args.end(), extra_flags.begin(), extra_flags.end());
  if (absl::Status s = Spawn(args); !s.ok()) return s;
  return WaitForPortFile(port_file);
}

absl::Status ServerProcess::Spawn(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // fork + exec rather than posix_spawn, for PR_SET_PDEATHSIG: a test
  // binary that aborts (a failed CHECK, a sanitizer report) takes its
  // servers with it instead of leaving them listening. Between fork and
  // exec only async-signal-safe calls (the test process has gRPC threads).
  const std::string log = dir_ + "/server.log";
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    return absl::InternalError(absl::StrCat("fork: errno ", errno));
  }
  if (pid_ == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) {
      ::_exit(126);  // the parent is already gone
    }
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || ::dup2(fd, STDOUT_FILENO) < 0 ||
        ::dup2(fd, STDERR_FILENO) < 0) {
      ::_exit(126);
    }
    ::close(fd);
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  return absl::OkStatus();
}

absl::Status ServerProcess::WaitForPortFile(const std::string& port_file) {
  const absl::Time give_up = absl::Now() + kStartTimeout;
  while (absl::Now() < give_up) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat(
          "cbloss-server exited during start (status ", status, "):\n", Log()));
    }
    const std::string text = ReadAll(port_file);
    int port;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) && port > 0) {
      port_ = port;
      return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  Kill();
  return absl::DeadlineExceededError(
      absl::StrCat("no port file after ", absl::FormatDuration(kStartTimeout),
                   ":\n", Log()));
}

int ServerProcess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return -1;
  if (paused_) Resume();
  ::kill(pid_, SIGTERM);
  const absl::Time give_up = absl::Now() + grace;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_ || done < 0) break;
    if (absl::Now() >= give_up) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_ = -1;
  return status;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  paused_ = false;
}

void ServerProcess::Pause() {
  if (pid_ <= 0 || ::kill(pid_, SIGSTOP) != 0) return;
  paused_ = true;
  const absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (!AllThreadsStopped(pid_) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
}

void ServerProcess::Resume() {
  if (pid_ > 0 && ::kill(pid_, SIGCONT) == 0) paused_ = false;
}

std::string ServerProcess::Log() const { return ReadAll(dir_ + "/server.log"); }

}  // namespace cbloss::testing
