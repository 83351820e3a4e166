// Copyright 2026 The cbloss Authors.
//
// A real cbloss-server child process, for cbloss-bench and the C++ tests
// (library cbloss_test_server; it lives here rather than under tests/ because
// cbloss-bench is built without the tests). Started with fork + exec on
// 127.0.0.1 port 0 with a fresh data directory, ready once it has written its
// port file (--port_file), stopped with SIGTERM (SIGKILL after a bounded
// wait) when destroyed. Its stdout and stderr go to a log file (Log()) that
// failing tests print. It is killed if the thread that started it exits
// (PR_SET_PDEATHSIG), so an aborted test binary leaves no server behind:
// start it from the test body, not from a short-lived thread. Not
// thread-safe; one per test.
//
// Example:
//   ServerProcess server;
//   ASSERT_TRUE(server.Start().ok());
//   auto client = cbloss::client::Client::Create(server.target());

#ifndef CBLOSS_BENCH_SERVER_PROCESS_H_
#define CBLOSS_BENCH_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace cbloss::testing {

struct ServerProcessOptions {
  // The cbloss-server binary; empty: the one this build made.
  std::string binary;
  // Flags after --listen=127.0.0.1:0, --port_file and --data_dir. The
  // defaults suit tests: few compute threads, a quick drain.
  std::vector<std::string> flags = {"--compute_threads=2",
                                    "--shutdown_grace_seconds=5"};
};

class ServerProcess {
 public:
  explicit ServerProcess(ServerProcessOptions options = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Spawns the server with options.flags and `extra_flags` and waits
  // (bounded) for its port file.
  absl::Status Start(const std::vector<std::string>& extra_flags = {});
  // SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the
  // exit status as waitpid reports it (or -1 if it was not running).
  int Stop(absl::Duration grace = absl::Seconds(15));
  // SIGKILL and reap.
  void Kill();
  // SIGSTOP / SIGCONT: a server that accepts connections but never answers.
  void Pause();
  void Resume();

  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& dir() const { return dir_; }
  std::string Log() const;

 private:
  // fork + exec of args[0]; the child's output goes to the log.
  absl::Status Spawn(std::vector<std::string> args);
  absl::Status WaitForPortFile(const std::string& port_file);

  const ServerProcessOptions options_;
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool paused_ = false;
};

}  // namespace cbloss::testing

#endif  // CBLOSS_BENCH_SERVER_PROCESS_H_
