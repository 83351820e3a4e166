// Copyright 2026 The cbloss Authors.

#include "server/unix_listener.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/server_posix.h"
#include "spdlog/spdlog.h"

namespace cbloss::server {
namespace {

constexpr int kBacklog = 128;

std::string Errno(int error) { return std::strerror(error); }

bool FillAddress(const std::string& path, sockaddr_un* address) {
  std::memset(address, 0, sizeof(*address));
  address->sun_family = AF_UNIX;
  if (path.size() >= sizeof(address->sun_path)) return false;
  std::memcpy(address->sun_path, path.data(), path.size());
  return true;
}

// Whether something accepts connections on the socket file `path`: a
// stale file (its server died) refuses them.
absl::StatusOr<bool> Live(const std::string& path) {
  sockaddr_un address;
  FillAddress(path, &address);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("socket: ", Errno(errno)));
  }
  const int rc =
      connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  const int error = errno;
  close(fd);
  if (rc == 0) return true;
  // ECONNREFUSED: a socket file nobody listens on; ENOENT: gone meanwhile.
  if (error == ECONNREFUSED || error == ENOENT) return false;
  // EAGAIN: its backlog is full, so someone listens.
  if (error == EAGAIN) return true;
  return absl::UnavailableError(
      absl::StrCat("cannot connect to the socket file there: ", Errno(error)));
}

}  // namespace

absl::StatusOr<mode_t> ParseSocketMode(absl::string_view text) {
  const absl::Status bad = absl::InvalidArgumentError(
      absl::StrCat("--unix_socket_mode=", text,
                   " is not a file mode of 3 or 4 octal digits (e.g. 0660)"));
  if (text.size() < 3 || text.size() > 4) return bad;
  mode_t mode = 0;
  for (const char c : text) {
    if (c < '0' || c > '7') return bad;
    mode = mode * 8 + static_cast<mode_t>(c - '0');
  }
  return mode;
}

absl::StatusOr<std::string> UnixSocketPath(absl::string_view address) {
  absl::string_view path = address;
  if (!absl::ConsumePrefix(&path, "unix:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen=", address, " is not a unix: address"));
  }
  // gRPC's syntax: unix:path (relative or absolute) or unix:///absolute.
  if (absl::StartsWith(path, "//")) path.remove_prefix(2);
  sockaddr_un probe;
  if (path.empty() || !FillAddress(std::string(path), &probe)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listen=", address, ": a Unix socket path must have 1 to ",
        sizeof(probe.sun_path) - 1, " characters"));
  }
  return std::string(path);
}

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Bind(
    const std::vector<std::string>& paths, mode_t mode) {
  std::unique_ptr<UnixListener> listener(new UnixListener());
  for (const std::string& path : paths) {
    const std::string where = absl::StrCat("cannot listen on unix:", path);
    sockaddr_un address;
    if (!FillAddress(path, &address)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the path is too long for a Unix socket"));
    }
    struct stat st;
    if (lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return absl::UnavailableError(
            absl::StrCat(where, ": a file that is not a socket is there"));
      }
      absl::StatusOr<bool> live = Live(path);
      if (!live.ok()) {
        return absl::UnavailableError(
            absl::StrCat(where, ": ", live.status().message()));
      }
      if (*live) {
        return absl::UnavailableError(absl::StrCat(
            where, ": address in use (a server is accepting on it)"));
      }
      spdlog::info("removing the stale socket file {} (nothing accepts on it)",
                   path);
      if (unlink(path.c_str()) != 0 && errno != ENOENT) {
        return absl::UnavailableError(absl::StrCat(
            where, ": cannot remove the stale socket file: ", Errno(errno)));
      }
    }
    Socket socket_file;
    socket_file.path = path;
    socket_file.fd =
        socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (socket_file.fd < 0) {
      return absl::UnavailableError(
          absl::StrCat(where, ": socket: ", Errno(errno)));
    }
    if (bind(socket_file.fd, reinterpret_cast<sockaddr*>(&address),
             sizeof(address)) != 0) {
      const int error = errno;
      close(socket_file.fd);
      return absl::UnavailableError(
          absl::StrCat(where, ": bind: ", Errno(error)));
    }
    // From here on the file is ours: Stop (the destructor) removes it.
    if (stat(path.c_str(), &st) == 0) {
      socket_file.device = st.st_dev;
      socket_file.inode = st.st_ino;
    }
    listener->sockets_.push_back(socket_file);
    // The mode is set before anyone can connect (listen comes after).
    if (chmod(path.c_str(), mode) != 0) {
      return absl::UnavailableError(
          absl::StrCat(where, ": chmod: ", Errno(errno)));
    }
    if (listen(socket_file.fd, kBacklog) != 0) {
      return absl::UnavailableError(
          absl::StrCat(where, ": listen: ", Errno(errno)));
    }
  }
  return listener;
}

UnixListener::~UnixListener() { Stop(); }

void UnixListener::Serve(grpc::Server* server,
                         std::function<void(uint64_t)> on_close) {
  server_ = server;
  on_close_ = std::move(on_close);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    spdlog::error("cannot watch the Unix sockets: {}", Errno(errno));
    return;
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = wake_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event);
  for (const Socket& s : sockets_) {
    event.data.fd = s.fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s.fd, &event);
  }
  thread_ = std::thread([this] { Loop(); });
}

void UnixListener::Loop() {
  constexpr int kEvents = 64;
  epoll_event events[kEvents];
  for (;;) {
    const int n = epoll_wait(epoll_fd_, events, kEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("Unix socket listener: epoll_wait: {}", Errno(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) return;
      bool listening = false;
      for (const Socket& s : sockets_) listening |= s.fd == fd;
      if (listening) {
        Accept(fd);
      } else {
        Closed(fd);
      }
    }
  }
}

// Every pending connection on `listen_fd`: credentials, id, watch, gRPC.
void UnixListener::Accept(int listen_fd) {
  for (;;) {
    const int fd =
        accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
          errno == ECONNABORTED) {
        return;
      }
      // EMFILE and the like: the connection waits in the backlog; do not
      // spin on it.
      spdlog::warn("Unix socket listener: accept: {}", Errno(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      return;
    }
    ucred credentials{};
    socklen_t size = sizeof(credentials);
    const int watch = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0 ||
        watch < 0) {
      spdlog::warn("Unix socket listener: cannot identify a connection: {}",
                   Errno(errno));
      if (watch >= 0) close(watch);
      close(fd);
      continue;
    }
    PeerIdentity peer;
    peer.unix_socket = true;
    peer.uid = credentials.uid;
    peer.pid = credentials.pid;
    peer.connection = next_id_++;
    epoll_event event{};
    event.events = EPOLLRDHUP;  // EPOLLHUP and EPOLLERR are always reported
    event.data.fd = watch;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, watch, &event) != 0) {
      spdlog::warn("Unix socket listener: cannot watch a connection: {}",
                   Errno(errno));
      close(watch);
      close(fd);
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      // fd may be the number of a closed connection not yet seen closing:
      // the new one takes it (Closed checks the id).
      peers_[fd] = peer;
    }
    watched_[watch] = Connection{peer.connection, fd};
    open_.fetch_add(1);
    spdlog::debug("unix connection {} from uid {} pid {} (fd {})",
                  peer.connection, peer.uid, peer.pid, fd);
    grpc::AddInsecureChannelFromFd(server_, fd);  // gRPC owns fd now
  }
}

void UnixListener::Closed(int watch_fd) {
  auto it = watched_.find(watch_fd);
  if (it == watched_.end()) return;
  const Connection connection = it->second;
  watched_.erase(it);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, watch_fd, nullptr);
  close(watch_fd);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto peer = peers_.find(connection.grpc_fd);
    if (peer != peers_.end() && peer->second.connection == connection.id) {
      peers_.erase(peer);
    }
  }
  open_.fetch_sub(1);
  spdlog::debug("unix connection {} closed", connection.id);
  if (on_close_) on_close_(connection.id);
}

void UnixListener::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (thread_.joinable()) {
    const uint64_t one = 1;
    if (write(wake_fd_, &one, sizeof(one)) < 0) {
      spdlog::warn("Unix socket listener: cannot wake: {}", Errno(errno));
    }
    thread_.join();
  }
  for (const auto& [watch, connection] : watched_) close(watch);
  watched_.clear();
  for (const Socket& s : sockets_) {
    close(s.fd);
    // Only the file bound here: a newer server may have replaced it.
    struct stat st;
    if (lstat(s.path.c_str(), &st) == 0 && st.st_dev == s.device &&
        st.st_ino == s.inode) {
      unlink(s.path.c_str());
    }
  }
  sockets_.clear();
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  wake_fd_ = epoll_fd_ = -1;
}

PeerIdentity UnixListener::Identify(absl::string_view peer) const {
  int fd = -1;
  if (!absl::ConsumePrefix(&peer, "fd:") || !absl::SimpleAtoi(peer, &fd)) {
    return PeerIdentity();
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(fd);
  return it == peers_.end() ? PeerIdentity() : it->second;
}

int UnixListener::open_connections() const { return open_.load(); }

}  // namespace cbloss::server
