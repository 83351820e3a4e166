// Copyright 2026 The cbloss Authors.

#include "server/shared_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace cbloss::server {
namespace {

// ---------------------------------------------------------------------------
// The SIGBUS guard.
//
// A mapping of a shared-memory object faults with SIGBUS on a page that lies
// beyond the object's end, which a client reaches by shrinking (ftruncate)
// its object while the server reads or writes it. The guard turns that into
// an error of the call: a process-wide SIGBUS handler looks the faulting
// address up in a fixed table of the live mappings, maps an anonymous zero
// page over the faulting page (MAP_FIXED), marks the mapping and returns, so
// the faulting instruction runs again on the zero page. CheckIntact then
// fails the call. A fault outside every mapping is not ours: the handler
// restores the default action and returns, so the fault repeats and the
// process dies as it would without the guard.
//
// The table is lock-free (the handler may run on any thread at any time):
// a slot is claimed by a CAS free -> busy, filled, and published as live
// with a release store; the handler reads only live slots. A slot is
// retired (live -> busy -> free) before its mapping is unmapped, so the
// handler never maps over an address range the process reuses. Nothing
// faults in a mapping while it retires: only a span's holder touches it,
// and it retires when the last holder drops it.

constexpr int kGuardSlots = 1024;
enum GuardState : int { kFree = 0, kBusy = 1, kLive = 2 };

struct GuardSlot {
  std::atomic<int> state{kFree};
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<bool> fired{false};
};

static_assert(std::atomic<int>::is_always_lock_free &&
                  std::atomic<uintptr_t>::is_always_lock_free &&
                  std::atomic<bool>::is_always_lock_free,
              "the SIGBUS handler needs lock-free atomics");

GuardSlot g_guard_slots[kGuardSlots];
// Slots at or past this index have never been live: the handler and
// CheckIntact scan only the ones below it.
std::atomic<int> g_guard_slots_used{0};
std::atomic<uintptr_t> g_page_size{4096};

void RestoreDefaultSigbus() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, nullptr);
}

// Async-signal-safe: atomics, mmap, sigaction, raise.
void OnSigbus(int /*signal*/, siginfo_t* info, void* /*context*/) {
  const int saved_errno = errno;
  // si_code > 0: raised by the kernel for a fault (not kill() or raise()).
  if (info != nullptr && info->si_code > 0) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(info->si_addr);
    const uintptr_t page_size = g_page_size.load(std::memory_order_relaxed);
    const int used = g_guard_slots_used.load(std::memory_order_acquire);
    for (int i = 0; i < used; ++i) {
      GuardSlot& slot = g_guard_slots[i];
      if (slot.state.load(std::memory_order_acquire) != kLive) continue;
      if (address < slot.begin.load(std::memory_order_relaxed) ||
          address >= slot.end.load(std::memory_order_relaxed)) {
        continue;
      }
      void* page =
          static_cast<char*>(info->si_addr) - (address & (page_size - 1));
      if (mmap(page, page_size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
        break;  // cannot repair: die as without the guard
      }
      slot.fired.store(true, std::memory_order_release);
      errno = saved_errno;
      return;
    }
  }
  RestoreDefaultSigbus();
  // A fault repeats when the handler returns; a sent signal must be re-sent.
  if (info == nullptr || info->si_code <= 0) raise(SIGBUS);
  errno = saved_errno;
}

void InstallSigbusGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    const long page_size = sysconf(_SC_PAGESIZE);
    if (page_size > 0) g_page_size.store(static_cast<uintptr_t>(page_size));
    struct sigaction action;
    std::memset(&action, 0, sizeof(action));
    action.sa_sigaction = OnSigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, nullptr);
  });
}

// The slot now guarding [begin, end), or -1 if the table is full.
int ClaimGuardSlot(uintptr_t begin, uintptr_t end) {
  for (int i = 0; i < kGuardSlots; ++i) {
    GuardSlot& slot = g_guard_slots[i];
    int expected = kFree;
    if (!slot.state.compare_exchange_strong(expected, kBusy,
                                            std::memory_order_acq_rel)) {
      continue;
    }
    slot.begin.store(begin, std::memory_order_relaxed);
    slot.end.store(end, std::memory_order_relaxed);
    slot.fired.store(false, std::memory_order_relaxed);
    int used = g_guard_slots_used.load(std::memory_order_acquire);
    while (used < i + 1 && !g_guard_slots_used.compare_exchange_weak(
                               used, i + 1, std::memory_order_acq_rel)) {
    }
    slot.state.store(kLive, std::memory_order_release);
    return i;
  }
  return -1;
}

void RetireGuardSlot(int i) {
  g_guard_slots[i].state.store(kBusy, std::memory_order_release);
  g_guard_slots[i].state.store(kFree, std::memory_order_release);
}

// Whether the guard fired on the live mapping holding `address`.
bool GuardFiredAt(const char* address) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  const int used = g_guard_slots_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    const GuardSlot& slot = g_guard_slots[i];
    if (slot.state.load(std::memory_order_acquire) != kLive) continue;
    if (a >= slot.begin.load(std::memory_order_relaxed) &&
        a < slot.end.load(std::memory_order_relaxed)) {
      return slot.fired.load(std::memory_order_acquire);
    }
  }
  return false;
}

// ---------------------------------------------------------------------------

// One guarded mmap of a shared-memory object (and the descriptor its size is
// checked on); unmapped when the last region or span holding it lets go.
class Mapping {
 public:
  Mapping(int fd, char* base, size_t length, int slot)
      : fd_(fd), base_(base), length_(length), slot_(slot) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    RetireGuardSlot(slot_);
    munmap(base_, length_);
    close(fd_);
  }

  int fd() const { return fd_; }
  char* base() const { return base_; }
  bool fired() const {
    return g_guard_slots[slot_].fired.load(std::memory_order_acquire);
  }

 private:
  const int fd_;
  char* const base_;
  const size_t length_;
  const int slot_;
};

std::string Quoted(absl::string_view s) {
  return absl::StrCat("'", absl::CHexEscape(s), "'");
}

absl::Status NotUnixSocketError() {
  return absl::PermissionDeniedError(
      "shared memory needs a Unix domain socket connection (a unix: target)");
}

absl::Status CheckName(absl::string_view name) {
  constexpr size_t kMaxName = 128;
  if (name.empty()) {
    return absl::InvalidArgumentError(
        "name is empty; a region's name is 1 to 128 characters of "
        "[A-Za-z0-9._-]");
  }
  if (name.size() > kMaxName) {
    return absl::InvalidArgumentError(
        absl::StrCat("name has ", name.size(),
                     " characters; a region's name is 1 to 128 characters of "
                     "[A-Za-z0-9._-]"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char ch = name[i];
    const bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
                    ch == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("name = ", Quoted(name), " has a character outside ",
                       "[A-Za-z0-9._-] at index ", i));
    }
  }
  return absl::OkStatus();
}

// POSIX: a portable shm_open name is '/' and up to NAME_MAX - 1 characters
// other than '/' (glibc adds it under /dev/shm).
absl::Status CheckKey(absl::string_view key, absl::string_view prefix) {
  constexpr size_t kMaxKeyTail = 254;
  const absl::string_view tail =
      key.empty() ? key : absl::string_view(key).substr(1);
  if (key.empty() || key[0] != '/' || tail.empty() ||
      tail.size() > kMaxKeyTail ||
      tail.find_first_of(absl::string_view("/\0", 2)) !=
          absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key = ", Quoted(key),
        " is not a shared-memory object name: '/' followed by 1 to 254 "
        "characters other than '/'"));
  }
  if (key.substr(0, prefix.size()) != prefix) {
    return absl::PermissionDeniedError(
        absl::StrCat("key ", Quoted(key),
                     " is outside the shared-memory prefix ", Quoted(prefix)));
  }
  return absl::OkStatus();
}

absl::Status OpenError(absl::string_view key, int error) {
  const std::string what = absl::StrCat("key ", Quoted(key), ": ");
  const std::string why = absl::StrCat(" (", std::strerror(error), ")");
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(
          absl::StrCat(what, "no shared-memory object of that name", why));
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(absl::StrCat(
          what, "the server cannot open the shared-memory object", why));
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      return absl::ResourceExhaustedError(absl::StrCat(
          what, "the server cannot open the shared-memory object", why));
    case EISDIR:
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", Quoted(key), " is not a regular shared-memory object", why));
    case EINVAL:
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(absl::StrCat(
          what, "not a shared-memory object name the system accepts", why));
    default:
      return absl::InternalError(absl::StrCat(
          what, "the server cannot open the shared-memory object", why));
  }
}

// Closes a descriptor unless released (the mapping takes it over).
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace

struct SharedMemoryRegistry::Region {
  v1::SharedMemoryRegion info;
  uint64_t connection = 0;
  std::shared_ptr<const Mapping> mapping;
  char* data = nullptr;  // info.offset bytes into the object
  dev_t device = 0;
  ino_t inode = 0;
  // Found smaller than the region on a resolve (the guard's mark is the
  // mapping's).
  std::atomic<bool> shrunk{false};

  bool broken() const { return shrunk.load() || mapping->fired(); }
};

class SharedMemoryRegistry::View final : public SharedMemoryView {
 public:
  View(const SharedMemoryRegistry* registry, const PeerIdentity& peer)
      : registry_(registry), peer_(peer) {}

  absl::StatusOr<SharedMemorySpan> Find(const v1::SharedMemoryRef& ref,
                                        absl::string_view field) const override;

 private:
  const SharedMemoryRegistry* const registry_;
  const PeerIdentity peer_;
};

absl::Status SharedMemoryOffError() {
  return absl::FailedPreconditionError(
      "shared memory is off on this server (start it with "
      "--allow_shared_memory)");
}

bool Overlaps(const SharedMemorySpan& a, const SharedMemorySpan& b) {
  if (a.data == nullptr || b.data == nullptr) return false;
  if (a.size == 0 || b.size == 0) return false;
  if (a.device != b.device || a.inode != b.inode) return false;
  return a.object_offset < b.object_offset + b.size &&
         b.object_offset < a.object_offset + a.size;
}

absl::Status CheckIntact(const SharedMemorySpan& span,
                         absl::string_view field) {
  if (span.data == nullptr || span.size == 0 || !GuardFiredAt(span.data)) {
    return absl::OkStatus();
  }
  // The guard fires for any page the kernel cannot give: the object shrank,
  // or (writing a page never written) its file system is full.
  return absl::FailedPreconditionError(absl::StrCat(
      field, ": the object of shared-memory region ", Quoted(span.region),
      " lost pages while this call used it (it shrank, or /dev/shm is full); "
      "the region is broken now: register it again"));
}

SharedMemoryRegistry::SharedMemoryRegistry(SharedMemoryOptions options)
    : options_(std::move(options)) {
  if (options_.allow) InstallSigbusGuard();
}

SharedMemoryRegistry::~SharedMemoryRegistry() = default;

absl::StatusOr<v1::SharedMemoryRegion> SharedMemoryRegistry::Register(
    const PeerIdentity& peer, const v1::RegisterSharedMemoryRequest& request) {
  if (!options_.allow) return SharedMemoryOffError();
  if (!peer.unix_socket) return NotUnixSocketError();
  const std::string& name = request.name();
  const std::string& key = request.key();
  const uint64_t offset = request.offset();
  const uint64_t size = request.byte_size();
  if (absl::Status s = CheckName(name); !s.ok()) return s;
  if (absl::Status s = CheckKey(key, options_.prefix); !s.ok()) return s;
  if (size == 0) {
    return absl::InvalidArgumentError(
        "byte_size is 0; a region needs at least one byte");
  }
  if (offset > std::numeric_limits<uint64_t>::max() - size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "byte_size: offset ", offset, " + byte_size ", size, " overflows"));
  }
  const uint64_t end = offset + size;
  // Cheap refusals before touching the object (checked again on insert).
  auto limits = [&]() -> absl::Status {
    if (regions_.count({peer.uid, name}) != 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("name: the caller already has a shared-memory region ",
                       Quoted(name), " (unregister it first)"));
    }
    if (static_cast<int64_t>(regions_.size()) >= options_.max_regions) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the server has ", regions_.size(),
          " shared-memory regions, the most --max_shared_memory_regions = ",
          options_.max_regions, " allows"));
    }
    if (size > options_.max_bytes ||
        mapped_bytes_ > options_.max_bytes - size) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "byte_size: ", size, " more bytes would make ", mapped_bytes_ + size,
          " bytes of shared-memory regions, beyond the ", options_.max_bytes,
          " bytes --max_shared_memory_mb allows"));
    }
    return absl::OkStatus();
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (absl::Status s = limits(); !s.ok()) return s;
  }

  const int fd = shm_open(key.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return OpenError(key, errno);
  FdCloser closer(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return OpenError(key, errno);
  // Ownership first: nothing else about another uid's object is reported.
  if (st.st_uid != peer.uid) {
    return absl::PermissionDeniedError(absl::StrCat(
        "key ", Quoted(key), ": the shared-memory object is owned by uid ",
        st.st_uid, ", not by the caller's uid ", peer.uid));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key ", Quoted(key), " is not a regular shared-memory object"));
  }
  const uint64_t object_size =
      st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
  if (end > object_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("byte_size: offset ", offset, " + byte_size ", size,
                     " is beyond the end of shared-memory object ", Quoted(key),
                     " (", object_size, " bytes)"));
  }

  // One mapping of the pages that cover [offset, end).
  const uint64_t page_size = g_page_size.load();
  const uint64_t map_offset = offset & ~(page_size - 1);
  const size_t map_length = static_cast<size_t>(end - map_offset);
  void* base = mmap(nullptr, map_length, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                    static_cast<off_t>(map_offset));
  if (base == MAP_FAILED) {
    const int error = errno;
    const std::string message = absl::StrCat(
        "key ", Quoted(key), ": cannot map ", map_length,
        " bytes of the shared-memory object (", std::strerror(error), ")");
    if (error == ENOMEM) return absl::ResourceExhaustedError(message);
    return absl::InternalError(message);
  }
  const uintptr_t begin = reinterpret_cast<uintptr_t>(base);
  const int slot = ClaimGuardSlot(begin, begin + map_length);
  if (slot < 0) {
    munmap(base, map_length);
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server has ", kGuardSlots,
        " shared-memory mappings (regions, and unregistered ones still in "
        "use); unregister some"));
  }
  auto region = std::make_shared<Region>();
  region->mapping = std::make_shared<const Mapping>(
      closer.Release(), static_cast<char*>(base), map_length, slot);
  region->data = static_cast<char*>(base) + (offset - map_offset);
  region->device = st.st_dev;
  region->inode = st.st_ino;
  region->connection = peer.connection;
  region->info.set_name(name);
  region->info.set_key(key);
  region->info.set_offset(offset);
  region->info.set_byte_size(size);

  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = limits(); !s.ok()) return s;  // unmaps `region`
  regions_.emplace(std::make_pair(peer.uid, name), region);
  mapped_bytes_ += size;
  return region->info;
}

absl::Status SharedMemoryRegistry::Unregister(const PeerIdentity& peer,
                                              absl::string_view name) {
  if (!options_.allow) return SharedMemoryOffError();
  if (!peer.unix_socket) return NotUnixSocketError();
  // Mappings still in use by a call are unmapped when it ends, outside the
  // lock.
  std::vector<std::shared_ptr<Region>> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  if (name.empty()) {
    auto it = regions_.lower_bound({peer.uid, std::string()});
    while (it != regions_.end() && it->first.first == peer.uid) {
      mapped_bytes_ -= it->second->info.byte_size();
      dropped.push_back(std::move(it->second));
      it = regions_.erase(it);
    }
    return absl::OkStatus();
  }
  auto it = regions_.find({peer.uid, std::string(name)});
  if (it == regions_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "name: the caller has no shared-memory region ", Quoted(name)));
  }
  mapped_bytes_ -= it->second->info.byte_size();
  dropped.push_back(std::move(it->second));
  regions_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::SharedMemoryRegion>> SharedMemoryRegistry::List(
    const PeerIdentity& peer) const {
  if (!options_.allow) return SharedMemoryOffError();
  if (!peer.unix_socket) return NotUnixSocketError();
  std::vector<v1::SharedMemoryRegion> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = regions_.lower_bound({peer.uid, std::string()});
       it != regions_.end() && it->first.first == peer.uid; ++it) {
    out.push_back(it->second->info);
  }
  return out;
}

void SharedMemoryRegistry::ReleaseConnection(uint64_t connection) {
  if (connection == 0) return;
  std::vector<std::shared_ptr<Region>> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = regions_.begin(); it != regions_.end();) {
    if (it->second->connection != connection) {
      ++it;
      continue;
    }
    mapped_bytes_ -= it->second->info.byte_size();
    dropped.push_back(std::move(it->second));
    it = regions_.erase(it);
  }
}

std::unique_ptr<SharedMemoryView> SharedMemoryRegistry::ViewFor(
    const PeerIdentity& peer) const {
  if (!options_.allow) return nullptr;
  return std::make_unique<View>(this, peer);
}

int SharedMemoryRegistry::regions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(regions_.size());
}

uint64_t SharedMemoryRegistry::mapped_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mapped_bytes_;
}

absl::StatusOr<SharedMemorySpan> SharedMemoryRegistry::View::Find(
    const v1::SharedMemoryRef& ref, absl::string_view field) const {
  if (!peer_.unix_socket) return NotUnixSocketError();
  std::shared_ptr<Region> region;
  {
    std::lock_guard<std::mutex> lock(registry_->mu_);
    auto it = registry_->regions_.find({peer_.uid, ref.region()});
    if (it != registry_->regions_.end()) region = it->second;
  }
  if (region == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(field, ": no shared-memory region ", Quoted(ref.region()),
                     " (register it first)"));
  }
  const v1::SharedMemoryRegion& info = region->info;
  const auto broken = [&] {
    return absl::FailedPreconditionError(absl::StrCat(
        field, ": shared-memory region ", Quoted(ref.region()),
        " is broken: its object ", Quoted(info.key()),
        region->shrunk.load() ? " shrank after registration"
                              : " lost pages during a call (it shrank, or "
                                "/dev/shm is full)",
        "; register it again"));
  };
  if (region->broken()) return broken();
  if (ref.offset() > info.byte_size() ||
      ref.byte_size() > info.byte_size() - ref.offset()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".byte_size: offset ", ref.offset(),
                     " + byte_size ", ref.byte_size(), " is beyond region ",
                     Quoted(ref.region()), " of ", info.byte_size(), " bytes"));
  }
  // The object may have shrunk since registration; its pages past the new
  // end would fault (the guard's case, caught here before any access).
  struct stat st;
  if (fstat(region->mapping->fd(), &st) != 0 || st.st_size < 0 ||
      static_cast<uint64_t>(st.st_size) < info.offset() + info.byte_size()) {
    region->shrunk.store(true);
    return broken();
  }
  SharedMemorySpan span;
  span.data = region->data + ref.offset();
  span.size = ref.byte_size();
  span.device = region->device;
  span.inode = region->inode;
  span.object_offset = info.offset() + ref.offset();
  span.region = ref.region();
  span.keep_alive = region->mapping;
  return span;
}

}  // namespace cbloss::server
