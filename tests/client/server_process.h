// Copyright 2026 The cbloss Authors.
//
// A real cbloss-server child process for the client tests: started with
// fork + exec on 127.0.0.1 port 0 with a fresh data directory, ready once it
// has written its port file, stopped with SIGTERM (SIGKILL after a bounded
// wait) when destroyed. Its stderr goes to a log file that failing tests
// print. It is killed if the thread that started it exits (PR_SET_PDEATHSIG),
// so an aborted test binary leaves no server behind: start it from the test
// body, not from a short-lived thread. Not thread-safe; one per test.
//
// Example:
//   ServerProcess server;
//   ASSERT_TRUE(server.Start().ok());
//   auto client = cbloss::Client::Create(server.target());

#ifndef CBLOSS_TESTS_CLIENT_SERVER_PROCESS_H_
#define CBLOSS_TESTS_CLIENT_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace cbloss::testing {

class ServerProcess {
 public:
  ServerProcess();
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Spawns the server and waits (bounded) for its port file.
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
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool paused_ = false;
};

}  // namespace cbloss::testing

#endif  // CBLOSS_TESTS_CLIENT_SERVER_PROCESS_H_
