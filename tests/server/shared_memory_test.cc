// Copyright 2026 The cbloss Authors.
//
// SharedMemoryRegistry (server/shared_memory.h) against real POSIX
// shared-memory objects this test creates (and unlinks): registration and
// each of its errors (API.md section 5.3), spans that outlive their region,
// shrunk objects and the SIGBUS guard; and ComputeLoss requests whose
// tensors are in shared memory, which must give the bytes of the same
// request sent inline.

#include "server/shared_memory.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/casts.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/half.h"
#include "gtest/gtest.h"
#include "server/compute_request.h"

namespace cbloss::server {
namespace {

using absl::StatusCode;

constexpr char kPrefix[] = "/cbloss-test-";
constexpr char kOff[] =
    "shared memory is off on this server (start it with "
    "--allow_shared_memory)";
constexpr char kNotUnix[] =
    "shared memory needs a Unix domain socket connection (a unix: target)";

// A POSIX shared-memory object of this test, mapped here too (as a client
// maps it); unlinked when done.
class ShmObject {
 public:
  explicit ShmObject(size_t size) {
    static int counter = 0;
    key_ = absl::StrCat(kPrefix, getpid(), "-", ++counter);
    fd_ = shm_open(key_.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd_, 0) << key_ << ": " << std::strerror(errno);
    Resize(size);
  }
  ShmObject(const ShmObject&) = delete;
  ShmObject& operator=(const ShmObject&) = delete;
  ~ShmObject() {
    Unmap();
    if (fd_ >= 0) close(fd_);
    shm_unlink(key_.c_str());
  }

  // ftruncate; the test's own mapping follows (so it never faults).
  void Resize(size_t size) {
    Unmap();
    ASSERT_EQ(ftruncate(fd_, static_cast<off_t>(size)), 0);
    size_ = size;
    if (size == 0) return;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    ASSERT_NE(p, MAP_FAILED);
    data_ = static_cast<char*>(p);
  }

  const std::string& key() const { return key_; }
  int fd() const { return fd_; }
  char* data() const { return data_; }

 private:
  void Unmap() {
    if (data_ != nullptr) munmap(data_, size_);
    data_ = nullptr;
  }

  std::string key_;
  int fd_ = -1;
  char* data_ = nullptr;
  size_t size_ = 0;
};

PeerIdentity UnixPeer(uint64_t connection = 1) {
  PeerIdentity peer;
  peer.unix_socket = true;
  peer.uid = getuid();
  peer.pid = getpid();
  peer.connection = connection;
  return peer;
}

SharedMemoryOptions On() {
  SharedMemoryOptions options;
  options.allow = true;
  options.prefix = kPrefix;
  return options;
}

v1::RegisterSharedMemoryRequest Req(const std::string& name,
                                    const std::string& key, uint64_t offset,
                                    uint64_t size) {
  v1::RegisterSharedMemoryRequest r;
  r.set_name(name);
  r.set_key(key);
  r.set_offset(offset);
  r.set_byte_size(size);
  return r;
}

v1::SharedMemoryRef Ref(const std::string& region, uint64_t offset,
                        uint64_t size) {
  v1::SharedMemoryRef r;
  r.set_region(region);
  r.set_offset(offset);
  r.set_byte_size(size);
  return r;
}

// --- Registration -----------------------------------------------------------

TEST(SharedMemoryRegistry, RegistersListsAndUnregisters) {
  ShmObject object(8192);
  SharedMemoryRegistry registry(On());
  const PeerIdentity peer = UnixPeer();
  absl::StatusOr<v1::SharedMemoryRegion> b =
      registry.Register(peer, Req("b", object.key(), 100, 200));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->name(), "b");
  EXPECT_EQ(b->key(), object.key());
  EXPECT_EQ(b->offset(), 100u);
  EXPECT_EQ(b->byte_size(), 200u);
  ASSERT_TRUE(registry.Register(peer, Req("a", object.key(), 0, 8192)).ok());
  EXPECT_EQ(registry.regions(), 2);
  EXPECT_EQ(registry.mapped_bytes(), 8392u);

  absl::StatusOr<std::vector<v1::SharedMemoryRegion>> list =
      registry.List(peer);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name(), "a");  // by name
  EXPECT_EQ((*list)[1].name(), "b");
  EXPECT_EQ((*list)[1].offset(), 100u);

  ASSERT_TRUE(registry.Unregister(peer, "a").ok());
  EXPECT_EQ(registry.List(peer)->size(), 1u);
  EXPECT_EQ(registry.mapped_bytes(), 200u);
  absl::Status again = registry.Unregister(peer, "a");
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_EQ(again.message(),
            "name: the caller has no shared-memory region 'a'");

  ASSERT_TRUE(registry.Register(peer, Req("c", object.key(), 0, 1)).ok());
  ASSERT_TRUE(registry.Unregister(peer, "").ok());  // all of them
  EXPECT_TRUE(registry.List(peer)->empty());
  EXPECT_EQ(registry.regions(), 0);
  EXPECT_EQ(registry.mapped_bytes(), 0u);
  EXPECT_TRUE(registry.Unregister(peer, "").ok());  // none left: still OK
}

TEST(SharedMemoryRegistry, FindGivesTheBytesOfTheObject) {
  ShmObject object(3 * 4096);
  for (int i = 0; i < 3 * 4096; ++i) object.data()[i] = static_cast<char>(i);
  SharedMemoryRegistry registry(On());
  const PeerIdentity peer = UnixPeer();
  // An offset that is not page-aligned: the mapping covers its pages.
  ASSERT_TRUE(registry.Register(peer, Req("r", object.key(), 5000, 3000)).ok());
  std::unique_ptr<SharedMemoryView> view = registry.ViewFor(peer);
  ASSERT_NE(view, nullptr);
  absl::StatusOr<SharedMemorySpan> span = view->Find(Ref("r", 10, 2990), "f");
  ASSERT_TRUE(span.ok()) << span.status();
  EXPECT_EQ(span->size, 2990u);
  EXPECT_EQ(span->object_offset, 5010u);
  EXPECT_EQ(span->region, "r");
  EXPECT_EQ(std::memcmp(span->data, object.data() + 5010, 2990), 0);
  struct stat st;
  ASSERT_EQ(fstat(object.fd(), &st), 0);
  EXPECT_EQ(span->device, st.st_dev);
  EXPECT_EQ(span->inode, st.st_ino);
  // Writes through the span are the client's bytes (MAP_SHARED).
  span->data[0] = 42;
  EXPECT_EQ(object.data()[5010], 42);
  EXPECT_TRUE(CheckIntact(*span, "f").ok());
}

TEST(SharedMemoryRegistry, OffRefusesEverything) {
  ShmObject object(64);
  SharedMemoryRegistry registry{SharedMemoryOptions()};
  EXPECT_FALSE(registry.allowed());
  const PeerIdentity peer = UnixPeer();
  absl::StatusOr<v1::SharedMemoryRegion> r =
      registry.Register(peer, Req("r", object.key(), 0, 64));
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), kOff);
  EXPECT_EQ(registry.Unregister(peer, "r").message(), kOff);
  EXPECT_EQ(registry.List(peer).status().message(), kOff);
  EXPECT_EQ(registry.ViewFor(peer), nullptr);
  EXPECT_EQ(SharedMemoryOffError().message(), kOff);
}

TEST(SharedMemoryRegistry, NeedsAUnixSocketPeer) {
  ShmObject object(64);
  SharedMemoryRegistry registry(On());
  PeerIdentity tcp;  // unix_socket = false
  tcp.uid = getuid();
  absl::StatusOr<v1::SharedMemoryRegion> r =
      registry.Register(tcp, Req("r", object.key(), 0, 64));
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(r.status().message(), kNotUnix);
  EXPECT_EQ(registry.Unregister(tcp, "").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(registry.List(tcp).status().code(), StatusCode::kPermissionDenied);
  // Even for a region a Unix peer of the same uid registered.
  ASSERT_TRUE(
      registry.Register(UnixPeer(), Req("r", object.key(), 0, 64)).ok());
  std::unique_ptr<SharedMemoryView> view = registry.ViewFor(tcp);
  ASSERT_NE(view, nullptr);
  absl::StatusOr<SharedMemorySpan> span = view->Find(Ref("r", 0, 64), "f");
  EXPECT_EQ(span.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(span.status().message(), kNotUnix);
}

TEST(SharedMemoryRegistry, ChecksTheName) {
  ShmObject object(64);
  SharedMemoryRegistry registry(On());
  for (const std::string& name :
       {std::string(), std::string("a b"), std::string("a/b"),
        std::string("caf\xc3\xa9"), std::string(129, 'x')}) {
    absl::StatusOr<v1::SharedMemoryRegion> r =
        registry.Register(UnixPeer(), Req(name, object.key(), 0, 64));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(r.status().message().substr(0, 4), "name") << r.status();
  }
  EXPECT_EQ(registry.Register(UnixPeer(), Req("a b", object.key(), 0, 64))
                .status()
                .message(),
            "name = 'a b' has a character outside [A-Za-z0-9._-] at index 1");
  EXPECT_TRUE(
      registry
          .Register(UnixPeer(), Req(std::string(128, 'x'), object.key(), 0, 64))
          .ok());
  EXPECT_TRUE(
      registry.Register(UnixPeer(), Req("A-z_0.9", object.key(), 0, 64)).ok());
}

TEST(SharedMemoryRegistry, ChecksTheKeyAndThePrefix) {
  SharedMemoryRegistry registry(On());
  for (const std::string& key :
       {std::string(), std::string("/"), std::string("cbloss-test-x"),
        std::string("/cbloss-test-a/b"), std::string("/cbloss-test-\0x", 15),
        "/" + std::string(255, 'x')}) {
    absl::StatusOr<v1::SharedMemoryRegion> r =
        registry.Register(UnixPeer(), Req("r", key, 0, 64));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(r.status().message().substr(0, 3), "key") << r.status();
  }
  absl::StatusOr<v1::SharedMemoryRegion> outside =
      registry.Register(UnixPeer(), Req("r", "/x", 0, 64));
  EXPECT_EQ(outside.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(outside.status().message(),
            "key '/x' is outside the shared-memory prefix '/cbloss-test-'");
  absl::StatusOr<v1::SharedMemoryRegion> missing = registry.Register(
      UnixPeer(), Req("r", absl::StrCat(kPrefix, "missing-", getpid()), 0, 64));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message().substr(0, 3), "key");

  // The default prefix.
  SharedMemoryOptions defaults;
  defaults.allow = true;
  SharedMemoryRegistry default_registry(defaults);
  EXPECT_EQ(default_registry.Register(UnixPeer(), Req("r", "/x", 0, 64))
                .status()
                .message(),
            "key '/x' is outside the shared-memory prefix '/cbloss-'");
}

TEST(SharedMemoryRegistry, ChecksTheRangeAgainstTheObject) {
  ShmObject object(1000);
  SharedMemoryRegistry registry(On());
  struct Case {
    uint64_t offset, size;
  };
  for (const Case& c : {Case{0, 0}, Case{0, 1001}, Case{999, 2}, Case{1000, 1},
                        Case{std::numeric_limits<uint64_t>::max(), 2},
                        Case{1, std::numeric_limits<uint64_t>::max()}}) {
    absl::StatusOr<v1::SharedMemoryRegion> r =
        registry.Register(UnixPeer(), Req("r", object.key(), c.offset, c.size));
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument)
        << c.offset << " " << c.size;
    EXPECT_EQ(r.status().message().substr(0, 9), "byte_size") << r.status();
  }
  EXPECT_EQ(registry.Register(UnixPeer(), Req("r", object.key(), 999, 2))
                .status()
                .message(),
            absl::StrCat("byte_size: offset 999 + byte_size 2 is beyond the "
                         "end of shared-memory object '",
                         object.key(), "' (1000 bytes)"));
  EXPECT_TRUE(
      registry.Register(UnixPeer(), Req("r", object.key(), 999, 1)).ok());
  EXPECT_EQ(registry.regions(), 1);
}

TEST(SharedMemoryRegistry, RefusesAnObjectThatIsNotRegular) {
  const std::string key = absl::StrCat(kPrefix, getpid(), "-fifo");
  const std::string path = "/dev/shm" + key;
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0)
      << "cannot make a FIFO at " << path << ": " << std::strerror(errno);
  SharedMemoryRegistry registry(On());
  absl::StatusOr<v1::SharedMemoryRegion> r =
      registry.Register(UnixPeer(), Req("r", key, 0, 1));
  unlink(path.c_str());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(
      r.status().message(),
      absl::StrCat("key '", key, "' is not a regular shared-memory object"));
}

TEST(SharedMemoryRegistry, NamesAreOnePerUidAndUidsDoNotSeeEachOther) {
  ShmObject object(64);
  SharedMemoryRegistry registry(On());
  ASSERT_TRUE(
      registry.Register(UnixPeer(1), Req("r", object.key(), 0, 64)).ok());
  // Another connection of the same uid shares the names.
  absl::StatusOr<v1::SharedMemoryRegion> dup =
      registry.Register(UnixPeer(2), Req("r", object.key(), 0, 32));
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(dup.status().message(),
            "name: the caller already has a shared-memory region 'r' "
            "(unregister it first)");
  EXPECT_TRUE(registry.ViewFor(UnixPeer(2))->Find(Ref("r", 0, 1), "f").ok());

  PeerIdentity other = UnixPeer(3);
  other.uid = getuid() + 1;
  EXPECT_TRUE(registry.List(other)->empty());
  EXPECT_EQ(registry.Unregister(other, "r").code(), StatusCode::kNotFound);
  absl::StatusOr<SharedMemorySpan> span =
      registry.ViewFor(other)->Find(Ref("r", 0, 1), "logits.shm");
  EXPECT_EQ(span.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(registry.Unregister(other, "").ok());
  EXPECT_EQ(registry.regions(), 1);  // the first uid's region stays
}

TEST(SharedMemoryRegistry, RefusesAnObjectOfAnotherUid) {
  ShmObject object(64);
  // Root gives the object away and calls as itself; an ordinary user keeps
  // it and calls as another uid (the peer identity is the registry's only
  // view of the caller). Either way owner != caller.
  uid_t owner = getuid();
  PeerIdentity caller = UnixPeer();
  if (getuid() == 0) {
    ASSERT_EQ(fchown(object.fd(), 65534, 65534), 0) << std::strerror(errno);
    owner = 65534;
  } else {
    caller.uid = getuid() == 65534 ? 65533 : 65534;
  }
  SharedMemoryRegistry registry(On());
  // The server can open it, but the owner is not the caller: refused (also
  // for root, API.md section 5.3).
  absl::StatusOr<v1::SharedMemoryRegion> r =
      registry.Register(caller, Req("r", object.key(), 0, 64));
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(r.status().message(),
            absl::StrCat("key '", object.key(),
                         "': the shared-memory object is owned by uid ", owner,
                         ", not by the caller's uid ", caller.uid));
  // The owner itself may.
  PeerIdentity owner_peer = UnixPeer();
  owner_peer.uid = owner;
  EXPECT_TRUE(
      registry.Register(owner_peer, Req("r", object.key(), 0, 64)).ok());
}

// The registry's answer when the server cannot open the object read-write:
// PERMISSION_DENIED naming the key.
bool RefusedAsUnopenable(const ShmObject& object, uid_t owner) {
  SharedMemoryRegistry registry(On());
  PeerIdentity peer = UnixPeer();
  peer.uid = owner;
  absl::StatusOr<v1::SharedMemoryRegion> r =
      registry.Register(peer, Req("r", object.key(), 0, 64));
  return r.status().code() == StatusCode::kPermissionDenied &&
         absl::StartsWith(r.status().message(),
                          absl::StrCat("key '", object.key(), "'"));
}

TEST(SharedMemoryRegistry, RefusesAnObjectTheServerCannotOpen) {
  ShmObject object(64);
  ASSERT_EQ(fchmod(object.fd(), 0400), 0);
  if (getuid() != 0) {
    EXPECT_TRUE(RefusedAsUnopenable(object, getuid()));
    return;
  }
  // Root opens every object, so the "server" is a child that has become
  // uid 65534; the object stays root's (mode 0400) and root is the caller.
  const pid_t child = fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    _exit(RefusedAsUnopenable(object, 0) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: setuid failed; 1: not refused";
}

TEST(SharedMemoryRegistry, EnforcesTheLimits) {
  ShmObject object(1000);
  SharedMemoryOptions options = On();
  options.max_regions = 2;
  options.max_bytes = 600;
  SharedMemoryRegistry registry(options);
  const PeerIdentity peer = UnixPeer();
  ASSERT_TRUE(registry.Register(peer, Req("a", object.key(), 0, 300)).ok());
  absl::StatusOr<v1::SharedMemoryRegion> big =
      registry.Register(peer, Req("b", object.key(), 0, 301));
  EXPECT_EQ(big.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(big.status().message().substr(0, 9), "byte_size");
  ASSERT_TRUE(registry.Register(peer, Req("b", object.key(), 0, 300)).ok());
  absl::StatusOr<v1::SharedMemoryRegion> third =
      registry.Register(peer, Req("c", object.key(), 0, 1));
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
  // The count is of every uid's regions.
  PeerIdentity other = UnixPeer();
  other.uid = getuid() + 1;
  EXPECT_EQ(
      registry.Register(other, Req("c", object.key(), 0, 1)).status().code(),
      StatusCode::kResourceExhausted);
  ASSERT_TRUE(registry.Unregister(peer, "a").ok());
  EXPECT_TRUE(registry.Register(peer, Req("c", object.key(), 0, 300)).ok());
  EXPECT_EQ(registry.mapped_bytes(), 600u);
}

TEST(SharedMemoryRegistry, ReleaseConnectionDropsOnlyItsRegions) {
  ShmObject object(64);
  SharedMemoryRegistry registry(On());
  ASSERT_TRUE(
      registry.Register(UnixPeer(7), Req("a", object.key(), 0, 8)).ok());
  ASSERT_TRUE(
      registry.Register(UnixPeer(7), Req("b", object.key(), 0, 8)).ok());
  ASSERT_TRUE(
      registry.Register(UnixPeer(8), Req("c", object.key(), 0, 8)).ok());
  registry.ReleaseConnection(7);
  absl::StatusOr<std::vector<v1::SharedMemoryRegion>> list =
      registry.List(UnixPeer(8));
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name(), "c");
  EXPECT_EQ(registry.mapped_bytes(), 8u);
  registry.ReleaseConnection(0);  // no connection: nothing
  registry.ReleaseConnection(8);
  EXPECT_EQ(registry.regions(), 0);
}

// --- References -------------------------------------------------------------

TEST(SharedMemoryView, ChecksEachReference) {
  ShmObject object(100);
  SharedMemoryRegistry registry(On());
  ASSERT_TRUE(
      registry.Register(UnixPeer(), Req("r", object.key(), 10, 50)).ok());
  std::unique_ptr<SharedMemoryView> view = registry.ViewFor(UnixPeer());
  absl::StatusOr<SharedMemorySpan> unknown =
      view->Find(Ref("q", 0, 1), "logits.shm");
  EXPECT_EQ(unknown.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(unknown.status().message(),
            "logits.shm: no shared-memory region 'q' (register it first)");
  struct Case {
    uint64_t offset, size;
  };
  for (const Case& c : {Case{0, 51}, Case{50, 1}, Case{51, 0}, Case{49, 2},
                        Case{std::numeric_limits<uint64_t>::max(), 2},
                        Case{2, std::numeric_limits<uint64_t>::max()}}) {
    absl::StatusOr<SharedMemorySpan> span =
        view->Find(Ref("r", c.offset, c.size), "logits.shm");
    EXPECT_EQ(span.status().code(), StatusCode::kInvalidArgument)
        << c.offset << " " << c.size;
    EXPECT_EQ(span.status().message().substr(0, 21), "logits.shm.byte_size:")
        << span.status();
  }
  EXPECT_EQ(view->Find(Ref("r", 49, 2), "logits.shm").status().message(),
            "logits.shm.byte_size: offset 49 + byte_size 2 is beyond region "
            "'r' of 50 bytes");
  EXPECT_TRUE(view->Find(Ref("r", 0, 50), "logits.shm").ok());
  EXPECT_TRUE(view->Find(Ref("r", 49, 1), "logits.shm").ok());
}

TEST(SharedMemoryView, OverlapIsByObjectAndBytesWhateverTheRegion) {
  ShmObject object(100), other(100);
  SharedMemoryRegistry registry(On());
  const PeerIdentity peer = UnixPeer();
  ASSERT_TRUE(registry.Register(peer, Req("a", object.key(), 0, 60)).ok());
  ASSERT_TRUE(registry.Register(peer, Req("b", object.key(), 40, 60)).ok());
  ASSERT_TRUE(registry.Register(peer, Req("c", other.key(), 0, 100)).ok());
  std::unique_ptr<SharedMemoryView> view = registry.ViewFor(peer);
  auto find = [&](const char* region, uint64_t offset, uint64_t size) {
    return *view->Find(Ref(region, offset, size), "f");
  };
  // a[40, 60) and b[0, 20) are the object's bytes [40, 60).
  EXPECT_TRUE(Overlaps(find("a", 50, 10), find("b", 0, 11)));
  EXPECT_TRUE(Overlaps(find("b", 0, 11), find("a", 50, 10)));
  EXPECT_FALSE(Overlaps(find("a", 0, 40), find("b", 0, 20)));  // adjacent
  EXPECT_FALSE(Overlaps(find("a", 0, 60), find("c", 0, 60)));  // other object
  EXPECT_TRUE(Overlaps(find("a", 0, 60), find("a", 59, 1)));
  EXPECT_FALSE(Overlaps(find("a", 0, 60), find("a", 10, 0)));  // no bytes
}

TEST(SharedMemoryView, ASpanOutlivesItsUnregisteredRegion) {
  ShmObject object(4096);
  std::memset(object.data(), 0x5a, 4096);
  SharedMemoryRegistry registry(On());
  const PeerIdentity peer = UnixPeer();
  ASSERT_TRUE(registry.Register(peer, Req("r", object.key(), 0, 4096)).ok());
  std::unique_ptr<SharedMemoryView> view = registry.ViewFor(peer);
  absl::StatusOr<SharedMemorySpan> span = view->Find(Ref("r", 0, 4096), "f");
  ASSERT_TRUE(span.ok());
  ASSERT_TRUE(registry.Unregister(peer, "r").ok());
  EXPECT_EQ(registry.mapped_bytes(), 0u);
  // Still mapped: the call that holds the span finishes.
  for (int i = 0; i < 4096; ++i) ASSERT_EQ(span->data[i], 0x5a) << i;
  span->data[7] = 1;
  EXPECT_EQ(object.data()[7], 1);
  EXPECT_TRUE(CheckIntact(*span, "f").ok());
  // Later references: unknown region.
  absl::StatusOr<SharedMemorySpan> later = view->Find(Ref("r", 0, 1), "f");
  EXPECT_EQ(later.status().code(), StatusCode::kFailedPrecondition);
  // The name is free again.
  EXPECT_TRUE(registry.Register(peer, Req("r", object.key(), 0, 16)).ok());
}

TEST(SharedMemoryView, AShrunkObjectBreaksItsRegionUntilRegisteredAgain) {
  ShmObject object(8192);
  SharedMemoryRegistry registry(On());
  const PeerIdentity peer = UnixPeer();
  ASSERT_TRUE(registry.Register(peer, Req("r", object.key(), 0, 8192)).ok());
  std::unique_ptr<SharedMemoryView> view = registry.ViewFor(peer);
  ASSERT_TRUE(view->Find(Ref("r", 0, 10), "f").ok());
  object.Resize(8191);
  // Even a reference to bytes that are still there.
  absl::StatusOr<SharedMemorySpan> span = view->Find(Ref("r", 0, 10), "f");
  EXPECT_EQ(span.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(span.status().message(),
            absl::StrCat("f: shared-memory region 'r' is broken: its object '",
                         object.key(),
                         "' shrank after registration; register it again"));
  object.Resize(8192);  // grown back: still broken
  EXPECT_EQ(view->Find(Ref("r", 0, 10), "f").status().code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(registry.Unregister(peer, "r").ok());
  ASSERT_TRUE(registry.Register(peer, Req("r", object.key(), 0, 8192)).ok());
  EXPECT_TRUE(view->Find(Ref("r", 0, 10), "f").ok());
}

TEST(SharedMemoryGuard, AnObjectShrunkUnderASpanGivesZerosAndAnError) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  ShmObject object(3 * page);
  std::memset(object.data(), 1, 3 * page);
  SharedMemoryRegistry registry(On());
  const PeerIdentity peer = UnixPeer();
  ASSERT_TRUE(
      registry.Register(peer, Req("r", object.key(), 0, 3 * page)).ok());
  absl::StatusOr<SharedMemorySpan> span =
      registry.ViewFor(peer)->Find(Ref("r", 0, 3 * page), "logits.shm");
  ASSERT_TRUE(span.ok());
  EXPECT_TRUE(CheckIntact(*span, "logits.shm").ok());
  object.Resize(page);  // the last two pages are gone: SIGBUS there
  // Reading every byte does not kill the process: the first page still has
  // the client's bytes, the lost ones read as zeros.
  const volatile char* bytes = span->data;
  int64_t sum = 0;
  for (size_t i = 0; i < 3 * page; ++i) sum += bytes[i];
  EXPECT_EQ(sum, static_cast<int64_t>(page));
  span->data[3 * page - 1] = 9;  // writes too
  absl::Status intact = CheckIntact(*span, "logits.shm");
  EXPECT_EQ(intact.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(intact.message(),
            "logits.shm: the object of shared-memory region 'r' lost pages "
            "while this call used it (it shrank, or /dev/shm is full); the "
            "region is broken now: register it again");
  // The region is broken for later references, even grown back.
  object.Resize(3 * page);
  absl::StatusOr<SharedMemorySpan> later =
      registry.ViewFor(peer)->Find(Ref("r", 0, 1), "logits.shm");
  EXPECT_EQ(later.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(later.status().message(),
            absl::StrCat("logits.shm: shared-memory region 'r' is broken: its "
                         "object '",
                         object.key(),
                         "' lost pages during a call (it shrank, or /dev/shm "
                         "is full); register it again"));
}

TEST(SharedMemoryGuardDeathTest, AFaultOutsideEveryRegionStillKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  SharedMemoryRegistry registry(On());  // installs the guard
  EXPECT_EXIT(
      {
        ShmObject object(2 * 4096);
        volatile char* p = static_cast<char*>(
            mmap(nullptr, 2 * 4096, PROT_READ, MAP_SHARED, object.fd(), 0));
        ftruncate(object.fd(), 0);
        shm_unlink(object.key().c_str());
        (void)p[4096];
        _exit(0);
      },
      testing::KilledBySignal(SIGBUS), "");
}

// --- ComputeLoss through shared memory
// -----------------------------------------

// Random [B, C] logits, labels and counts: a softmax request with inline
// bytes; `shm` versions are made from it by MoveTo*.
v1::ComputeLossRequest BytesRequest(int64_t B, int64_t C, v1::DType dtype,
                                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  v1::ComputeLossRequest r;
  for (int64_t j = 0; j < C; ++j)
    r.mutable_class_counts()->add_counts(1 + j * j);
  r.mutable_config()->set_loss_type(v1::LOSS_TYPE_FOCAL);
  r.mutable_config()->set_weighting(v1::WEIGHTING_SCHEME_EFFECTIVE_NUMBER);
  r.mutable_config()->set_beta(0.99);
  r.mutable_config()->set_gamma(2.0);
  v1::Tensor* logits = r.mutable_logits();
  logits->set_dtype(dtype);
  logits->add_shape(B);
  logits->add_shape(C);
  std::string bytes;
  for (int64_t i = 0; i < B * C; ++i) {
    const float z = normal(rng);
    if (dtype == v1::DTYPE_FLOAT32) {
      bytes.append(reinterpret_cast<const char*>(&z), 4);
    } else {
      const uint16_t h =
          dtype == v1::DTYPE_BFLOAT16 ? FloatToBFloat16(z) : FloatToFloat16(z);
      bytes.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  logits->set_data(bytes);
  for (int64_t i = 0; i < B; ++i) {
    r.add_labels(static_cast<int32_t>(rng() % static_cast<uint32_t>(C)));
  }
  r.set_want_gradient(true);
  r.set_want_per_sample_losses(true);
  return r;
}

// Copies `t`'s bytes to `at` in `object` and refers to them instead.
void MoveToShm(v1::Tensor* t, const ShmObject& object, uint64_t at,
               const std::string& region, uint64_t region_offset) {
  std::memcpy(object.data() + at, t->data().data(), t->data().size());
  *t->mutable_shm() =
      Ref(region, at - region_offset, static_cast<uint64_t>(t->data().size()));
  t->clear_data();
}

struct ShmRun {
  absl::Status status;
  v1::ComputeLossResponse response;
};

ShmRun Compute(const v1::ComputeLossRequest& r, const SharedMemoryView* view,
               DetachedGradient* detached = nullptr) {
  ShmRun out;
  absl::StatusOr<Computation> c = ResolveComputation(r, nullptr, nullptr, view);
  if (!c.ok()) {
    out.status = c.status();
    return out;
  }
  out.status = RunComputation(*c, {}, &out.response, detached);
  return out;
}

// The responses but for the gradient, byte for byte.
void ExpectSameResults(const v1::ComputeLossResponse& shm,
                       v1::ComputeLossResponse bytes) {
  EXPECT_FALSE(shm.has_gradient());
  bytes.clear_gradient();
  EXPECT_EQ(shm.SerializeAsString(), bytes.SerializeAsString());
  EXPECT_EQ(absl::bit_cast<uint64_t>(shm.loss()),
            absl::bit_cast<uint64_t>(bytes.loss()));
}

class ShmCompute : public testing::Test {
 protected:
  static constexpr size_t kSize = 1 << 16;
  void SetUp() override {
    ASSERT_TRUE(
        registry_.Register(UnixPeer(), Req("all", object_.key(), 0, kSize))
            .ok());
    // A second name for the object's upper half.
    ASSERT_TRUE(registry_
                    .Register(UnixPeer(),
                              Req("upper", object_.key(), kSize / 2, kSize / 2))
                    .ok());
    view_ = registry_.ViewFor(UnixPeer());
  }

  ShmObject object_{kSize};
  SharedMemoryRegistry registry_{On()};
  std::unique_ptr<SharedMemoryView> view_;
};

TEST_F(ShmCompute, ResultsAreBitIdenticalToInlineBytes) {
  struct Case {
    v1::DType logits, gradient;
    uint64_t logits_at, gradient_at;  // in the object; odd = unaligned
  };
  const Case cases[] = {
      {v1::DTYPE_FLOAT32, v1::DTYPE_FLOAT32, 0, 8192},
      {v1::DTYPE_FLOAT32, v1::DTYPE_FLOAT32, 1, 8195},  // unaligned both
      {v1::DTYPE_FLOAT32, v1::DTYPE_BFLOAT16, 64, kSize / 2 + 3},
      {v1::DTYPE_BFLOAT16, v1::DTYPE_BFLOAT16, 0, 4096},
      {v1::DTYPE_BFLOAT16, v1::DTYPE_FLOAT32, 3, kSize / 2 + 1},
      {v1::DTYPE_FLOAT16, v1::DTYPE_FLOAT16, 2, 9000},
  };
  const int64_t B = 7, C = 13;
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(v1::DType_Name(c.logits), " -> ",
                              v1::DType_Name(c.gradient), " at ", c.logits_at,
                              ", ", c.gradient_at));
    v1::ComputeLossRequest bytes_request = BytesRequest(B, C, c.logits, 17);
    bytes_request.set_gradient_dtype(c.gradient);
    const ShmRun inline_run = Compute(bytes_request, nullptr);
    ASSERT_TRUE(inline_run.status.ok()) << inline_run.status;
    const std::string& want = inline_run.response.gradient().data();
    ASSERT_EQ(
        want.size(),
        static_cast<size_t>(B * C * (c.gradient == v1::DTYPE_FLOAT32 ? 4 : 2)));

    v1::ComputeLossRequest r = bytes_request;
    MoveToShm(r.mutable_logits(), object_, c.logits_at, "all", 0);
    const bool upper = c.gradient_at >= kSize / 2;
    *r.mutable_gradient_shm() =
        Ref(upper ? "upper" : "all", c.gradient_at - (upper ? kSize / 2 : 0),
            want.size());
    r.set_want_gradient(false);  // implied by gradient_shm
    std::memset(object_.data() + c.gradient_at, 0x7f, want.size());
    DetachedGradient detached;
    const ShmRun shm_run = Compute(r, view_.get(), &detached);
    ASSERT_TRUE(shm_run.status.ok()) << shm_run.status;
    EXPECT_EQ(detached.data(), nullptr);
    ExpectSameResults(shm_run.response, inline_run.response);
    EXPECT_EQ(
        std::memcmp(object_.data() + c.gradient_at, want.data(), want.size()),
        0);

    // Logits in shared memory, gradient in the response: the same bytes.
    v1::ComputeLossRequest logits_only = r;
    logits_only.clear_gradient_shm();
    logits_only.set_want_gradient(true);
    const ShmRun half_run = Compute(logits_only, view_.get());
    ASSERT_TRUE(half_run.status.ok()) << half_run.status;
    EXPECT_EQ(half_run.response.SerializeAsString(),
              inline_run.response.SerializeAsString());
  }
}

TEST_F(ShmCompute, TargetsInSharedMemoryToo) {
  const int64_t B = 4, C = 6;
  v1::ComputeLossRequest bytes_request =
      BytesRequest(B, C, v1::DTYPE_FLOAT32, 5);
  bytes_request.clear_labels();
  bytes_request.mutable_config()->set_loss_type(v1::LOSS_TYPE_SIGMOID);
  v1::Tensor* t = bytes_request.mutable_targets();
  t->set_dtype(v1::DTYPE_FLOAT16);
  t->add_shape(B);
  t->add_shape(C);
  std::string targets;
  for (int64_t i = 0; i < B * C; ++i) {
    const uint16_t h = FloatToFloat16((i % 3) * 0.5f);
    targets.append(reinterpret_cast<const char*>(&h), 2);
  }
  t->set_data(targets);
  const ShmRun inline_run = Compute(bytes_request, nullptr);
  ASSERT_TRUE(inline_run.status.ok()) << inline_run.status;

  v1::ComputeLossRequest r = bytes_request;
  MoveToShm(r.mutable_logits(), object_, 100, "all", 0);
  MoveToShm(r.mutable_targets(), object_, 1001, "all", 0);
  *r.mutable_gradient_shm() = Ref("all", 2000, B * C * 4);
  const ShmRun shm_run = Compute(r, view_.get());
  ASSERT_TRUE(shm_run.status.ok()) << shm_run.status;
  ExpectSameResults(shm_run.response, inline_run.response);
  EXPECT_EQ(
      std::memcmp(object_.data() + 2000,
                  inline_run.response.gradient().data().data(), B * C * 4),
      0);
  // The gradient may not land on the targets either.
  *r.mutable_gradient_shm() = Ref("all", 1000, B * C * 4);
  EXPECT_EQ(Compute(r, view_.get()).status.message(),
            "gradient_shm overlaps targets.shm");
}

TEST_F(ShmCompute, RefusesBadReferences) {
  const int64_t B = 2, C = 4;
  const v1::ComputeLossRequest bytes_request =
      BytesRequest(B, C, v1::DTYPE_FLOAT32, 3);
  v1::ComputeLossRequest r = bytes_request;
  MoveToShm(r.mutable_logits(), object_, 0, "all", 0);  // 32 bytes at 0

  // Shared memory off on the server.
  ShmRun off = Compute(r, nullptr);
  EXPECT_EQ(off.status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(off.status.message(), kOff);
  v1::ComputeLossRequest grad_off = bytes_request;
  *grad_off.mutable_gradient_shm() = Ref("all", 0, B * C * 4);
  EXPECT_EQ(Compute(grad_off, nullptr).status.message(), kOff);

  // shm beside data or float_data.
  v1::ComputeLossRequest both = r;
  both.mutable_logits()->set_data(bytes_request.logits().data());
  ShmRun both_run = Compute(both, view_.get());
  EXPECT_EQ(both_run.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(both_run.status.message(),
            "logits: exactly one of data, float_data and shm must be set (shm "
            "and data are set)");
  both.mutable_logits()->clear_data();
  both.mutable_logits()->add_float_data(1.0f);
  EXPECT_EQ(Compute(both, view_.get()).status.message(),
            "logits: exactly one of data, float_data and shm must be set (shm "
            "and float_data are set)");
  // Unchanged without shm.
  v1::ComputeLossRequest neither = bytes_request;
  neither.mutable_logits()->clear_data();
  EXPECT_EQ(Compute(neither, view_.get()).status.message(),
            "logits: exactly one of data and float_data must be non-empty "
            "(neither is set)");

  // Unknown region; beyond the region; the wrong size.
  v1::ComputeLossRequest unknown = r;
  unknown.mutable_logits()->mutable_shm()->set_region("nope");
  ShmRun unknown_run = Compute(unknown, view_.get());
  EXPECT_EQ(unknown_run.status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(unknown_run.status.message(),
            "logits.shm: no shared-memory region 'nope' (register it first)");
  v1::ComputeLossRequest beyond = r;
  *beyond.mutable_logits()->mutable_shm() = Ref("upper", kSize / 2 - 16, 32);
  ShmRun beyond_run = Compute(beyond, view_.get());
  EXPECT_EQ(beyond_run.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(beyond_run.status.message().substr(0, 21), "logits.shm.byte_size:");
  v1::ComputeLossRequest wrong_size = r;
  wrong_size.mutable_logits()->mutable_shm()->set_byte_size(30);
  ShmRun wrong_run = Compute(wrong_size, view_.get());
  EXPECT_EQ(wrong_run.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong_run.status.message(),
            "logits.shm.byte_size is 30 bytes; shape [2, 4] of DTYPE_FLOAT32 "
            "needs 32");

  // gradient_shm: the wrong size (bf16: 2 bytes an element), unknown.
  v1::ComputeLossRequest grad = r;
  grad.set_gradient_dtype(v1::DTYPE_BFLOAT16);
  *grad.mutable_gradient_shm() = Ref("all", 1024, B * C * 4);
  ShmRun grad_size = Compute(grad, view_.get());
  EXPECT_EQ(grad_size.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(grad_size.status.message(),
            "gradient_shm.byte_size is 32 bytes; a [2, 4] gradient of "
            "DTYPE_BFLOAT16 needs 16");
  grad.mutable_gradient_shm()->set_byte_size(B * C * 2);
  EXPECT_TRUE(Compute(grad, view_.get()).status.ok());
  grad.mutable_gradient_shm()->set_region("nope");
  EXPECT_EQ(Compute(grad, view_.get()).status.message(),
            "gradient_shm: no shared-memory region 'nope' (register it first)");

  // Overlap with the logits: in the same region, through another region
  // naming the same bytes; adjacent is fine.
  v1::ComputeLossRequest overlap = r;
  *overlap.mutable_gradient_shm() = Ref("all", 31, B * C * 4);
  ShmRun overlap_run = Compute(overlap, view_.get());
  EXPECT_EQ(overlap_run.status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(overlap_run.status.message(), "gradient_shm overlaps logits.shm");
  *overlap.mutable_logits()->mutable_shm() = Ref("all", kSize / 2 + 8, 32);
  *overlap.mutable_gradient_shm() = Ref("upper", 0, 32);
  std::memcpy(object_.data() + kSize / 2 + 8,
              bytes_request.logits().data().data(), 32);
  EXPECT_EQ(Compute(overlap, view_.get()).status.message(),
            "gradient_shm overlaps logits.shm");
  *overlap.mutable_gradient_shm() = Ref("upper", 40, 32);
  EXPECT_TRUE(Compute(overlap, view_.get()).status.ok());
  *overlap.mutable_gradient_shm() = Ref("all", 0, 32);  // just before
  EXPECT_TRUE(Compute(overlap, view_.get()).status.ok());
}

TEST_F(ShmCompute, ARegionUnregisteredDuringACallServesThatCall) {
  const v1::ComputeLossRequest bytes_request =
      BytesRequest(3, 5, v1::DTYPE_FLOAT32, 9);
  const ShmRun inline_run = Compute(bytes_request, nullptr);
  v1::ComputeLossRequest r = bytes_request;
  MoveToShm(r.mutable_logits(), object_, 0, "all", 0);
  *r.mutable_gradient_shm() = Ref("all", 4096, 60);
  absl::StatusOr<Computation> c =
      ResolveComputation(r, nullptr, nullptr, view_.get());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(registry_.Unregister(UnixPeer(), "").ok());
  v1::ComputeLossResponse response;
  ASSERT_TRUE(RunComputation(*c, {}, &response).ok());
  ExpectSameResults(response, inline_run.response);
  EXPECT_EQ(std::memcmp(object_.data() + 4096,
                        inline_run.response.gradient().data().data(), 60),
            0);
  EXPECT_EQ(Compute(r, view_.get()).status.code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(ShmCompute, AnObjectShrunkDuringACallFailsIt) {
  const int64_t B = 64, C = 64;  // 16 KiB of logits: four pages
  v1::ComputeLossRequest r = BytesRequest(B, C, v1::DTYPE_FLOAT32, 11);
  MoveToShm(r.mutable_logits(), object_, 0, "all", 0);
  absl::StatusOr<Computation> c =
      ResolveComputation(r, nullptr, nullptr, view_.get());
  ASSERT_TRUE(c.ok()) << c.status();
  object_.Resize(4096);  // the engine's reads past the first page fault
  v1::ComputeLossResponse response;
  absl::Status s = RunComputation(*c, {}, &response);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "logits.shm: the object of shared-memory region 'all' lost pages "
            "while this call used it (it shrank, or /dev/shm is full); the "
            "region is broken now: register it again");
  EXPECT_EQ(Compute(r, view_.get()).status.code(),
            StatusCode::kFailedPrecondition);
}

// --- Concurrency (also run under TSan: scripts/sanitize.sh) ---------------

// Callers on four connections register, resolve, use and unregister their
// regions of one object while another thread lists and drops connections:
// every span still reads its caller's bytes, every call either works or is
// told its region is gone, and nothing stays mapped at the end.
TEST(SharedMemoryConcurrency, CallersAndConnectionReleasesInterleave) {
  constexpr int kCallers = 4;
  constexpr int kRounds = 200;
  constexpr uint64_t kSlice = 4096;
  ShmObject object(kCallers * kSlice);
  SharedMemoryRegistry registry(On());
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  threads.reserve(kCallers + 1);
  std::atomic<int> failures{0};
  std::vector<int> last_written(kCallers, -1);  // each caller's own entry
  for (int c = 0; c < kCallers; ++c) {
    threads.emplace_back([&, c] {
      const PeerIdentity peer = UnixPeer(100 + c);
      const std::string name = absl::StrCat("caller-", c);
      const uint64_t offset = c * kSlice;
      std::unique_ptr<SharedMemoryView> view = registry.ViewFor(peer);
      for (int round = 0; round < kRounds; ++round) {
        absl::StatusOr<v1::SharedMemoryRegion> r =
            registry.Register(peer, Req(name, object.key(), offset, kSlice));
        if (!r.ok()) {
          // Only a name whose release raced our unregister may be taken.
          if (r.status().code() != StatusCode::kAlreadyExists) ++failures;
          registry.Unregister(peer, name).IgnoreError();
          continue;
        }
        absl::StatusOr<SharedMemorySpan> span =
            view->Find(Ref(name, 0, kSlice), "logits.shm");
        if (span.ok()) {
          std::memset(span->data, c + round, kSlice);
          for (uint64_t i = 0; i < kSlice; ++i) {
            if (span->data[i] != static_cast<char>(c + round)) {
              ++failures;
              break;
            }
          }
          if (!CheckIntact(*span, "logits.shm").ok()) ++failures;
          last_written[c] = round;
        } else if (span.status().code() != StatusCode::kFailedPrecondition) {
          ++failures;
        }
        absl::Status s = registry.Unregister(peer, name);
        if (!s.ok() && s.code() != StatusCode::kNotFound) ++failures;
      }
    });
  }
  threads.emplace_back([&] {
    uint64_t connection = 100;
    while (!done.load()) {
      registry.ReleaseConnection(connection);
      connection = connection == 100 + kCallers - 1 ? 100 : connection + 1;
      if (!registry.List(UnixPeer()).ok()) ++failures;
      std::this_thread::yield();
    }
  });
  for (int c = 0; c < kCallers; ++c) threads[c].join();
  done = true;
  threads.back().join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(registry.regions(), 0);
  EXPECT_EQ(registry.mapped_bytes(), 0u);
  // Each caller's last write through a span is in the object.
  for (int c = 0; c < kCallers; ++c) {
    ASSERT_GE(last_written[c], 0) << c;
    EXPECT_EQ(object.data()[c * kSlice], static_cast<char>(c + last_written[c]))
        << c;
  }
}

}  // namespace
}  // namespace cbloss::server
