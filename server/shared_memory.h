// Copyright 2026 The cbloss Authors.
//
// Shared-memory tensors for clients on the same host (API.md section 5.3),
// after Triton's system shared-memory extension: a client puts its logits in
// a POSIX shared-memory object, registers a region of it once, and then
// sends only references (SharedMemoryRef) in its requests; the server reads
// the tensors and writes the gradient in place.
//
// Security: a caller can make the server touch only memory it could touch
// itself. A region is accepted only from a Unix-domain-socket connection
// whose peer uid (SO_PEERCRED, taken at accept) owns the object, only for a
// key under the configured prefix, and only with shared memory enabled.
// Regions belong to the caller's uid (processes of one uid share a
// namespace, as they share memory rights); the regions registered over a
// connection are released when it closes.
//
// Lifetime: a region is mapped once, at registration. A request's
// references resolve to SharedMemorySpans that hold the mapping alive until
// the request ends, so unregistering a region while a call uses it never
// unmaps memory under it (the call finishes; later references to the name
// are FAILED_PRECONDITION). Every reference is checked against its region's
// bounds, and the object's size is checked again on every resolve; an
// object shrunk during a call (SIGBUS on a real mapping) is caught by a
// guard that maps zeros over the lost pages and marks the region broken, so
// the call fails FAILED_PRECONDITION instead of the process dying.
//
// Example (the service, for one call):
//   std::unique_ptr<SharedMemoryView> view = registry.ViewFor(peer);
//   absl::StatusOr<SharedMemorySpan> span = view->Find(ref, "logits.shm");
//
// Thread-safety: SharedMemoryRegistry's methods may be called concurrently;
// a SharedMemoryView is used by one call at a time.

#ifndef CBLOSS_SERVER_SHARED_MEMORY_H_
#define CBLOSS_SERVER_SHARED_MEMORY_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cbloss/v1/cbloss.pb.h"

namespace cbloss::server {

// Who is calling, as far as memory rights go.
struct PeerIdentity {
  // False for TCP (and HTTP) callers: they may not use shared memory.
  bool unix_socket = false;
  uid_t uid = 0;
  pid_t pid = 0;
  // Unique per accepted connection for the server's lifetime (never
  // reused); 0 for none.
  uint64_t connection = 0;
};

struct SharedMemoryOptions {
  bool allow = false;               // --allow_shared_memory
  std::string prefix = "/cbloss-";  // --shared_memory_prefix
  int max_regions = 256;            // --max_shared_memory_regions (all uids)
  uint64_t max_bytes = 4ull << 30;  // --max_shared_memory_mb, mapped total
};

// Bytes of a region that one reference names, valid while `keep_alive` is.
struct SharedMemorySpan {
  char* data = nullptr;
  uint64_t size = 0;
  // Identity of the underlying object (st_dev, st_ino) and the span's
  // offset in it: two spans overlap iff same object and ranges intersect.
  dev_t device = 0;
  ino_t inode = 0;
  uint64_t object_offset = 0;
  std::string region;  // the region's name, for messages
  // Holds the mapping; also answers whether a guard fired on it.
  std::shared_ptr<const void> keep_alive;
};

// True if `a` and `b` share at least one byte of the same object.
bool Overlaps(const SharedMemorySpan& a, const SharedMemorySpan& b);

// What one call may reference: the caller's regions.
class SharedMemoryView {
 public:
  virtual ~SharedMemoryView() = default;
  // The bytes `ref` names. `field` names the reference in messages
  // ("logits.shm", "gradient_shm"). PERMISSION_DENIED for a caller not on a
  // Unix socket; FAILED_PRECONDITION for an unknown or broken region or an
  // object that shrank; INVALID_ARGUMENT for offset/byte_size outside the
  // region.
  virtual absl::StatusOr<SharedMemorySpan> Find(
      const v1::SharedMemoryRef& ref, absl::string_view field) const = 0;
};

// FAILED_PRECONDITION "shared memory is off on this server (...)": what a
// request using shared memory gets from a server without it.
absl::Status SharedMemoryOffError();

// FAILED_PRECONDITION if a guard fired on `span` (its object shrank while
// it was in use), naming `field`; OK otherwise.
absl::Status CheckIntact(const SharedMemorySpan& span, absl::string_view field);

class SharedMemoryRegistry {
 public:
  explicit SharedMemoryRegistry(SharedMemoryOptions options);
  ~SharedMemoryRegistry();
  SharedMemoryRegistry(const SharedMemoryRegistry&) = delete;
  SharedMemoryRegistry& operator=(const SharedMemoryRegistry&) = delete;

  bool allowed() const { return options_.allow; }

  // RegisterSharedMemory. FAILED_PRECONDITION when shared memory is off;
  // PERMISSION_DENIED for a caller not on a Unix socket, a key outside the
  // prefix, an object the caller's uid does not own or the server cannot
  // open; INVALID_ARGUMENT for a bad name/key/size or a range beyond the
  // object; ALREADY_EXISTS for a name the caller has; RESOURCE_EXHAUSTED
  // beyond the limits. Each message names the field.
  absl::StatusOr<v1::SharedMemoryRegion> Register(
      const PeerIdentity& peer, const v1::RegisterSharedMemoryRequest& request);
  // UnregisterSharedMemory (empty name: all of the caller's regions).
  absl::Status Unregister(const PeerIdentity& peer, absl::string_view name);
  // ListSharedMemory: the caller's regions by name.
  absl::StatusOr<std::vector<v1::SharedMemoryRegion>> List(
      const PeerIdentity& peer) const;
  // Drops every region registered over `connection` (it closed).
  void ReleaseConnection(uint64_t connection);

  // The view for one call by `peer`; null when shared memory is off. Valid
  // while the registry is; the spans it gives hold their own mappings.
  std::unique_ptr<SharedMemoryView> ViewFor(const PeerIdentity& peer) const;

  // For metrics.
  int regions() const;
  uint64_t mapped_bytes() const;

 private:
  struct Region;
  class View;

  const SharedMemoryOptions options_;
  mutable std::mutex mu_;
  // (uid, name) -> region.
  std::map<std::pair<uid_t, std::string>, std::shared_ptr<Region>> regions_;
  uint64_t mapped_bytes_ = 0;
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_SHARED_MEMORY_H_
