// Copyright 2026 The cbloss Authors.
//
// cbloss-server's `--listen=unix:PATH` listeners (API.md section 5.3): its
// own accept loop, so that each connection's peer credentials are known.
//
// gRPC can listen on a Unix socket by itself, but then it never says who is
// on the other end. Here the server binds the sockets, accepts connections,
// reads each one's SO_PEERCRED (uid, pid) and gives it a connection id
// never reused, and only then hands it to gRPC
// (grpc::AddInsecureChannelFromFd). gRPC names such a peer "fd:N"; Identify
// maps that name back to the connection (fd N stays open, so cannot be
// reused, while a call on the connection runs). A dup of each connection's
// fd is watched (epoll, EPOLLRDHUP / EPOLLHUP) to learn when it closes, and
// the owner is told (SharedMemoryRegistry::ReleaseConnection).
//
// Socket files: a stale one (left by a crash: connect() is refused) is
// removed and bound again; a live one is "address in use"; anything else at
// the path is an error. The file's mode is set before the socket listens;
// it is removed on Stop if it is still the one bound here.
//
// Unix sockets are plaintext: they are local, and protected by their mode.
//
// Example (server/server.cc):
//   absl::StatusOr<std::unique_ptr<UnixListener>> unix =
//       UnixListener::Bind({"/run/cbloss.sock"}, 0660);
//   ... grpc_server = builder.BuildAndStart();
//   (*unix)->Serve(grpc_server.get(), [&](uint64_t id) { ... });
//   PeerIdentity peer = (*unix)->Identify(context->peer());
//   (*unix)->Stop();  // before grpc_server->Shutdown()
//
// Thread-safety: Bind, Serve and Stop are called from one thread; Identify
// and open_connections from any. `on_close` runs on the listener's thread.

#ifndef CBLOSS_SERVER_UNIX_LISTENER_H_
#define CBLOSS_SERVER_UNIX_LISTENER_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server.h"
#include "server/shared_memory.h"

namespace cbloss::server {

// The file mode of --unix_socket_mode ("0660", "660"); INVALID_ARGUMENT if
// `text` is not 3 or 4 octal digits.
absl::StatusOr<mode_t> ParseSocketMode(absl::string_view text);

// The path of a `unix:` address ("unix:/run/x.sock", "unix:///run/x.sock",
// "unix:relative.sock"); INVALID_ARGUMENT for an empty or too long path.
absl::StatusOr<std::string> UnixSocketPath(absl::string_view address);

class UnixListener {
 public:
  // Binds and listens on every path, with file mode `mode`. Errors:
  // INVALID_ARGUMENT for a path too long for a socket address; UNAVAILABLE
  // for a live socket at the path ("address in use"), a file that is not a
  // socket, or a failed bind. Nothing is accepted before Serve.
  static absl::StatusOr<std::unique_ptr<UnixListener>> Bind(
      const std::vector<std::string>& paths, mode_t mode);
  ~UnixListener();  // Stop()

  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Starts accepting in a thread of its own; each connection is handed to
  // `server` (already started). `on_close(connection id)` is called once
  // for every connection that closes before Stop.
  void Serve(grpc::Server* server, std::function<void(uint64_t)> on_close);
  // Stops accepting and watching, closes the listening sockets and removes
  // their files. Connections handed to gRPC stay gRPC's. Idempotent.
  void Stop();

  // Who is on the other end of the gRPC peer `peer` ("fd:N"): the
  // connection's uid, pid and id, unix_socket = true; a PeerIdentity with
  // unix_socket = false for any other peer (TCP, HTTP, unknown).
  PeerIdentity Identify(absl::string_view peer) const;

  // Connections accepted and not yet seen closing.
  int open_connections() const;

 private:
  struct Socket {
    std::string path;
    int fd = -1;
    dev_t device = 0;  // of the socket file, to remove only our own
    ino_t inode = 0;
  };
  struct Connection {
    uint64_t id = 0;
    int grpc_fd = -1;  // the fd gRPC owns; its peer is "fd:<grpc_fd>"
  };

  UnixListener() = default;
  void Loop();
  void Accept(int listen_fd);
  void Closed(int watch_fd);

  std::vector<Socket> sockets_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: Stop wakes the loop
  grpc::Server* server_ = nullptr;
  std::function<void(uint64_t)> on_close_;
  std::thread thread_;
  bool stopped_ = false;
  uint64_t next_id_ = 1;  // only the loop's thread touches it
  std::atomic<int> open_{0};

  mutable std::mutex mu_;
  // gRPC's fd -> the peer on it.
  std::map<int, PeerIdentity> peers_;
  // Watched dup -> its connection (only the loop's thread touches it).
  std::map<int, Connection> watched_;
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_UNIX_LISTENER_H_
