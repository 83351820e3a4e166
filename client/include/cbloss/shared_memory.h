// Copyright 2026 The cbloss Authors.
//
// SharedMemoryBuffer: one batch buffer (logits, then gradient) in a POSIX
// shared-memory object that a server on the same host reads and writes in
// place (API.md section 5.3), so that ComputeLoss sends references instead
// of the tensors' bytes. Needs a `unix:` target and a server started with
// --allow_shared_memory, running as this process's uid (or root).
//
// Create makes the object (shm_open O_CREAT | O_EXCL, mode 0600, key
// "/cbloss-<pid>-<n>"), sizes and maps it, registers it on the Client as
// region "cbloss-<pid>-<n>", and shm_unlinks the key at once: the memory
// lives while this process's and the server's mappings do, so a process
// that dies leaves nothing in /dev/shm. The destructor unregisters the
// region and unmaps it.
//
// If a call fails with FAILED_PRECONDITION naming the region (the server
// restarted, or the connection the region was registered on closed),
// ComputeLoss registers a fresh object once, mapped at the same address
// with the same contents (the spans stay valid), and sends the call again.
//
// Thread-safety: a SharedMemoryBuffer holds one batch; use it from one
// thread at a time. Its Client must outlive it.
//
// Example:
//   namespace cbc = cbloss::client;
//   auto client = cbc::Client::Create("unix:/run/cbloss/cbloss.sock");
//   absl::StatusOr<std::unique_ptr<cbc::SharedMemoryBuffer>> buffer =
//       cbc::SharedMemoryBuffer::Create(client->get(), B, C);
//   absl::Span<float> z = (*buffer)->logits();   // room for B * C floats
//   std::copy(logits.begin(), logits.end(), z.begin());
//   absl::StatusOr<cbc::LossResult> r = (*buffer)->ComputeLoss(
//       cbc::LossSource::Dataset("cifar10-lt"), B, C, cbc::Labels(labels));
//   absl::Span<const float> g = (*buffer)->gradient();  // dL/dz, B * C floats

#ifndef CBLOSS_CLIENT_INCLUDE_CBLOSS_SHARED_MEMORY_H_
#define CBLOSS_CLIENT_INCLUDE_CBLOSS_SHARED_MEMORY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cbloss/client.h"
#include "cbloss/loss_call.h"
#include "cbloss/v1/cbloss.pb.h"

namespace cbloss::client {

struct SharedMemoryBufferOptions {
  // The logits' element type: DTYPE_FLOAT32 (logits()) or DTYPE_FLOAT16 /
  // DTYPE_BFLOAT16 (logits_half(), raw bit patterns).
  v1::DType logits_dtype = v1::DTYPE_FLOAT32;
  // Start of the object's key; must match the server's
  // --shared_memory_prefix.
  std::string key_prefix = "/cbloss-";
};

class SharedMemoryBuffer {
 public:
  // Room for a batch of up to rows * cols elements; `client` must outlive
  // the buffer. INVALID_ARGUMENT for rows or cols < 1, a bad dtype or
  // prefix; the errors of Client::RegisterSharedMemory (FAILED_PRECONDITION
  // when the server has shared memory off, PERMISSION_DENIED over TCP);
  // the errno of shm_open / ftruncate / mmap otherwise.
  static absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> Create(
      Client* client, int64_t rows, int64_t cols,
      SharedMemoryBufferOptions options = {});

  SharedMemoryBuffer(const SharedMemoryBuffer&) = delete;
  SharedMemoryBuffer& operator=(const SharedMemoryBuffer&) = delete;
  // Unregisters the region (errors ignored) and unmaps it.
  ~SharedMemoryBuffer();

  // Where the caller writes a [B, C] batch's logits, row-major, from the
  // start: capacity() elements, empty if logits_dtype is not that width.
  absl::Span<float> logits();
  absl::Span<uint16_t> logits_half();
  // The gradient of the last ComputeLoss, [B, C] row-major from the start:
  // float32, or the bits of FLOAT16 / BFLOAT16 (LossOptions::gradient_dtype).
  absl::Span<const float> gradient() const;
  absl::Span<const uint16_t> gradient_half() const;

  // One ComputeLoss over the buffer: the first rows * cols logits, and (if
  // options.want_gradient) the gradient written into gradient() /
  // gradient_half() rather than into the result. INVALID_ARGUMENT if the
  // batch does not fit or options.gradient_out is given.
  absl::StatusOr<LossResult> ComputeLoss(const LossSource& source, int64_t rows,
                                         int64_t cols, const Target& target,
                                         LossOptions options = {});

  // The references ComputeLoss sends, for a LossStream or a hand-built
  // request.
  Logits LogitsRef(int64_t rows, int64_t cols) const;
  v1::SharedMemoryRef GradientRef(int64_t rows, int64_t cols,
                                  v1::DType gradient_dtype) const;

  // The region's name on the server and its object's (unlinked) key.
  const std::string& region() const { return region_; }
  const std::string& key() const { return key_; }
  // Elements of logits (and of gradient) the buffer holds.
  int64_t capacity() const { return capacity_; }
  uint64_t byte_size() const { return byte_size_; }

 private:
  SharedMemoryBuffer(Client* client, int64_t capacity,
                     SharedMemoryBufferOptions options);
  // Creates, maps (at base_ if it is set, keeping its contents) and
  // registers a fresh object, then unlinks its key.
  absl::Status Attach();

  Client* const client_;
  const int64_t capacity_;
  const SharedMemoryBufferOptions options_;
  uint64_t gradient_offset_ = 0;
  uint64_t byte_size_ = 0;
  char* base_ = nullptr;
  std::string key_;
  std::string region_;
};

}  // namespace cbloss::client

#endif  // CBLOSS_CLIENT_INCLUDE_CBLOSS_SHARED_MEMORY_H_
