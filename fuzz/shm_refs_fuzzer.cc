// Copyright 2026 The cbloss Authors.
//
// Fuzzes shared-memory references (API.md section 5.3) in ComputeLoss
// requests: Tensor.shm of logits and targets, and gradient_shm, resolved by
// a real SharedMemoryRegistry holding three regions of one POSIX
// shared-memory object (two of them overlapping in the object, one of 8
// bytes).
//
// The invariant is that the server never reads or writes a byte outside the
// region a reference names. A mapping is page-granular, so ASan could not
// see a stray access inside it; the view given to ResolveComputation
// therefore resolves every reference with the registry's own view (its
// bounds checks, overlap identity and error statuses) and then points the
// span into a heap buffer of exactly the region's size holding the same
// bytes, where ASan sees every access past either end.
//
// Besides ASan/UBSan, it aborts when
// - a request using shared memory succeeds with shared memory off;
// - an OK response to a request with gradient_shm carries a gradient;
// - an OK result differs by a bit from the same request with each
//   reference replaced by the bytes it names (Tensor.data), or the latter
//   fails.
//
// Input: one byte choosing how the regions are filled (bits 0-1: float32,
// bfloat16 or float16 values in [0, 1], or the input's own bytes; bits
// 2-3: the byte at which the first value starts), then a serialised
// cbloss.v1.ComputeLossRequest.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "cbloss/v1/cbloss.pb.h"
#include "core/half.h"
#include "server/compute_request.h"
#include "server/shared_memory.h"

namespace {

using cbloss::server::SharedMemorySpan;
using cbloss::server::SharedMemoryView;
using cbloss::v1::ComputeLossRequest;
using cbloss::v1::ComputeLossResponse;

constexpr int64_t kMaxClaimedElements = int64_t{1} << 16;
constexpr uint64_t kObjectSize = 4096;

struct RegionSpec {
  const char* name;
  uint64_t offset;  // in the object
  uint64_t size;
};
// "b" overlaps "r" in the object: [515, 1027).
constexpr RegionSpec kRegions[] = {
    {"r", 3, 1024}, {"b", 515, 1024}, {"c", 2048, 8}};

[[noreturn]] void Fail(const ComputeLossRequest& request, const char* what) {
  std::fprintf(stderr, "shm_refs_fuzzer: %s\nrequest:\n%s\n", what,
               request.DebugString().c_str());
  std::abort();
}

cbloss::server::PeerIdentity Peer() {
  cbloss::server::PeerIdentity peer;
  peer.unix_socket = true;
  peer.uid = getuid();
  peer.pid = getpid();
  peer.connection = 1;
  return peer;
}

// The registry's view, with spans moved into exact-size heap copies.
class MirroredView final : public SharedMemoryView {
 public:
  explicit MirroredView(std::unique_ptr<SharedMemoryView> real)
      : real_(std::move(real)) {
    for (const RegionSpec& r : kRegions) {
      mirrors_[r.name] = {r.offset, std::unique_ptr<char[]>(new char[r.size]),
                          r.size};
    }
  }

  absl::StatusOr<SharedMemorySpan> Find(
      const cbloss::v1::SharedMemoryRef& ref,
      absl::string_view field) const override {
    absl::StatusOr<SharedMemorySpan> span = real_->Find(ref, field);
    if (!span.ok()) return span;
    const Mirror& m = mirrors_.at(span->region);
    const uint64_t at = span->object_offset - m.object_offset;
    if (at > m.size || span->size > m.size - at) {
      std::fprintf(stderr, "shm_refs_fuzzer: a span outside its region\n");
      std::abort();
    }
    span->data = m.bytes.get() + at;
    return span;
  }

  // Fills every region as the input's first byte says.
  void Fill(uint8_t how, const uint8_t* input, size_t input_size) {
    const int pattern = how & 3;
    const uint64_t shift = (how >> 2) & 3;
    for (auto& [name, m] : mirrors_) {
      char* out = m.bytes.get();
      std::memset(out, 0, m.size);
      if (pattern == 3) {
        for (uint64_t i = 0; i < m.size; ++i) {
          out[i] = input_size ? static_cast<char>(input[i % input_size]) : 0;
        }
        continue;
      }
      const int width = pattern == 0 ? 4 : 2;
      for (uint64_t i = 0; shift + (i + 1) * width <= m.size; ++i) {
        const float v = static_cast<float>((i * 37) % 101) / 100.0f;
        char* at = out + shift + i * width;
        if (pattern == 0) {
          std::memcpy(at, &v, 4);
        } else {
          const uint16_t h = pattern == 1 ? cbloss::FloatToBFloat16(v)
                                          : cbloss::FloatToFloat16(v);
          std::memcpy(at, &h, 2);
        }
      }
    }
  }

 private:
  struct Mirror {
    uint64_t object_offset = 0;
    std::unique_ptr<char[]> bytes;
    uint64_t size = 0;
  };
  const std::unique_ptr<SharedMemoryView> real_;
  std::map<std::string, Mirror> mirrors_;
};

// One object, its regions registered, its name unlinked at once (the
// mappings keep the memory).
cbloss::server::SharedMemoryRegistry& Registry() {
  static cbloss::server::SharedMemoryRegistry* const registry = [] {
    cbloss::server::SharedMemoryOptions options;
    options.allow = true;
    options.prefix = "/cbloss-fuzz-";
    auto* r = new cbloss::server::SharedMemoryRegistry(options);
    const std::string key = absl::StrCat("/cbloss-fuzz-", getpid());
    const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, kObjectSize) != 0) {
      std::perror("shm_refs_fuzzer: shm_open");
      std::abort();
    }
    for (const RegionSpec& spec : kRegions) {
      cbloss::v1::RegisterSharedMemoryRequest request;
      request.set_name(spec.name);
      request.set_key(key);
      request.set_offset(spec.offset);
      request.set_byte_size(spec.size);
      absl::StatusOr<cbloss::v1::SharedMemoryRegion> region =
          r->Register(Peer(), request);
      if (!region.ok()) {
        std::fprintf(stderr, "shm_refs_fuzzer: %s\n",
                     region.status().ToString().c_str());
        std::abort();
      }
    }
    shm_unlink(key.c_str());
    close(fd);
    return r;
  }();
  return *registry;
}

bool UsesSharedMemory(const ComputeLossRequest& request) {
  return request.logits().has_shm() ||
         (request.has_targets() && request.targets().has_shm()) ||
         request.has_gradient_shm();
}

// `t` with its reference replaced by the bytes it names; false if it does
// not resolve.
bool Inline(const SharedMemoryView& view, cbloss::v1::Tensor* t) {
  if (!t->has_shm()) return true;
  absl::StatusOr<SharedMemorySpan> span = view.Find(t->shm(), "inline");
  if (!span.ok()) return false;
  t->clear_shm();
  t->set_data(std::string(span->data, span->size));
  return true;
}

// The gradient of an OK inline response as bytes of its dtype.
std::string GradientBytes(const ComputeLossResponse& response) {
  const cbloss::v1::Tensor& g = response.gradient();
  if (g.float_data_size() == 0) return g.data();
  return std::string(reinterpret_cast<const char*>(g.float_data().data()),
                     sizeof(float) * g.float_data_size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  ComputeLossRequest request;
  if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (cbloss::server::ClaimedElements(request) > kMaxClaimedElements) return 0;
  static MirroredView* const view =
      new MirroredView(Registry().ViewFor(Peer()));
  view->Fill(data[0], data, size);

  if (UsesSharedMemory(request) &&
      cbloss::server::ResolveComputation(request, nullptr, nullptr, nullptr)
          .ok()) {
    Fail(request, "shared memory used with shared memory off");
  }

  // The same request with bytes, taken before the gradient is written.
  ComputeLossRequest inline_request = request;
  const bool inlined = Inline(*view, inline_request.mutable_logits()) &&
                       (!inline_request.has_targets() ||
                        Inline(*view, inline_request.mutable_targets()));
  SharedMemorySpan gradient;
  if (request.has_gradient_shm()) {
    absl::StatusOr<SharedMemorySpan> g =
        view->Find(request.gradient_shm(), "gradient_shm");
    if (g.ok()) gradient = *g;
    inline_request.clear_gradient_shm();
    inline_request.set_want_gradient(true);
  }

  absl::StatusOr<cbloss::server::Computation> c =
      cbloss::server::ResolveComputation(request, nullptr, nullptr, view);
  if (!c.ok()) {
    if (c.status().message().empty()) Fail(request, "error without a message");
    return 0;
  }
  ComputeLossResponse response;
  const absl::Status s = cbloss::server::RunComputation(*c, {}, &response);
  if (!s.ok()) return 0;
  if (!inlined) Fail(request, "OK with a reference that does not resolve");
  if (request.has_gradient_shm()) {
    if (response.has_gradient()) Fail(request, "gradient_shm and a gradient");
    if (gradient.data == nullptr) Fail(request, "gradient_shm did not resolve");
  }

  absl::StatusOr<cbloss::server::Computation> ci =
      cbloss::server::ResolveComputation(inline_request, nullptr);
  if (!ci.ok()) Fail(request, "the inline request fails");
  ComputeLossResponse inline_response;
  if (!cbloss::server::RunComputation(*ci, {}, &inline_response).ok()) {
    Fail(request, "the inline request fails to run");
  }
  if (request.has_gradient_shm()) {
    const std::string want = GradientBytes(inline_response);
    if (want.size() != gradient.size ||
        std::memcmp(want.data(), gradient.data, want.size()) != 0) {
      Fail(request, "gradient_shm differs from the inline gradient");
    }
    inline_response.clear_gradient();
  }
  if (response.SerializeAsString() != inline_response.SerializeAsString()) {
    Fail(request, "shared memory changes the response");
  }
  return 0;
}
