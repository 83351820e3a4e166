// Copyright 2026 The cbloss Authors.

#include "cbloss/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cbloss::client {
namespace {

// The gradient starts on a cache line of its own.
constexpr uint64_t kAlignment = 64;

// Width of one element of `dtype` as the wire carries it; 0 if not a
// floating type the service takes.
uint64_t ElementSize(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_UNSPECIFIED:
    case v1::DTYPE_FLOAT32:
      return sizeof(float);
    case v1::DTYPE_FLOAT16:
    case v1::DTYPE_BFLOAT16:
      return sizeof(uint16_t);
    default:
      return 0;
  }
}

// The dtype's name, or its number if it has none.
std::string DTypeText(v1::DType dtype) {
  return v1::DType_IsValid(dtype) ? v1::DType_Name(dtype)
                                  : std::to_string(static_cast<int>(dtype));
}

absl::Status ErrnoError(int error, const std::string& what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOSPC:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

// A new POSIX shared-memory object of `size` bytes, open read-write.
struct Object {
  int fd = -1;
  std::string key;
};

absl::StatusOr<Object> CreateObject(const std::string& prefix, uint64_t size) {
  // Keys are "<prefix><pid>-<n>"; one already taken (another process of
  // this pid in a different pid namespace) moves on to the next n.
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; attempt < 64; ++attempt) {
    Object object;
    object.key = absl::StrCat(prefix, getpid(), "-", counter.fetch_add(1));
    object.fd = shm_open(object.key.c_str(), O_CREAT | O_EXCL | O_RDWR,
                         S_IRUSR | S_IWUSR);
    if (object.fd < 0 && errno == EEXIST) continue;
    if (object.fd < 0) return ErrnoError(errno, "shm_open " + object.key);
    if (ftruncate(object.fd, static_cast<off_t>(size)) != 0) {
      const int error = errno;
      close(object.fd);
      shm_unlink(object.key.c_str());
      return ErrnoError(error, "ftruncate " + object.key);
    }
    return object;
  }
  return absl::AlreadyExistsError(
      absl::StrCat("no free shared-memory key under '", prefix, "'"));
}

}  // namespace

SharedMemoryBuffer::SharedMemoryBuffer(Client* client, int64_t capacity,
                                       SharedMemoryBufferOptions options)
    : client_(client), capacity_(capacity), options_(std::move(options)) {
  const uint64_t logits_bytes =
      static_cast<uint64_t>(capacity_) * ElementSize(options_.logits_dtype);
  gradient_offset_ = (logits_bytes + kAlignment - 1) / kAlignment * kAlignment;
  // Room for a float32 gradient, the widest.
  byte_size_ =
      gradient_offset_ + static_cast<uint64_t>(capacity_) * sizeof(float);
}

absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> SharedMemoryBuffer::Create(
    Client* client, int64_t rows, int64_t cols,
    SharedMemoryBufferOptions options) {
  if (client == nullptr) {
    return absl::InvalidArgumentError("SharedMemoryBuffer needs a client");
  }
  // 2^31 each keeps rows * cols * 4 far from overflowing.
  if (rows < 1 || cols < 1 || rows > (int64_t{1} << 31) ||
      cols > (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a SharedMemoryBuffer of [", rows, ", ", cols,
                     "]: rows and cols must be in [1, 2^31]"));
  }
  if (ElementSize(options.logits_dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits_dtype ", DTypeText(options.logits_dtype),
                     " is not FLOAT32, FLOAT16 or BFLOAT16"));
  }
  if (options.key_prefix.size() < 2 || options.key_prefix[0] != '/' ||
      options.key_prefix.find('/', 1) != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("key_prefix '", options.key_prefix,
                     "' must be '/' and a name without '/'"));
  }
  std::unique_ptr<SharedMemoryBuffer> buffer(
      new SharedMemoryBuffer(client, rows * cols, std::move(options)));
  if (absl::Status s = buffer->Attach(); !s.ok()) return s;
  return buffer;
}

absl::Status SharedMemoryBuffer::Attach() {
  // A name this uid already has (another process in another pid namespace
  // reached the same key) moves on to the next object.
  for (int attempt = 0; attempt < 8; ++attempt) {
    absl::StatusOr<Object> object =
        CreateObject(options_.key_prefix, byte_size_);
    if (!object.ok()) return object.status();
    char* mapped = nullptr;
    absl::Status s;
    if (base_ == nullptr) {
      void* p = mmap(nullptr, byte_size_, PROT_READ | PROT_WRITE, MAP_SHARED,
                     object->fd, 0);
      if (p == MAP_FAILED) {
        s = ErrnoError(errno, "mmap " + object->key);
      } else {
        mapped = static_cast<char*>(p);
      }
    } else {
      // Same contents, same address: copy through a second mapping, then
      // replace the old pages in place.
      void* copy = mmap(nullptr, byte_size_, PROT_READ | PROT_WRITE, MAP_SHARED,
                        object->fd, 0);
      if (copy == MAP_FAILED) {
        s = ErrnoError(errno, "mmap " + object->key);
      } else {
        std::memcpy(copy, base_, byte_size_);
        munmap(copy, byte_size_);
        void* p = mmap(base_, byte_size_, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED, object->fd, 0);
        if (p == MAP_FAILED) {
          s = ErrnoError(errno, "mmap " + object->key);
        } else {
          mapped = static_cast<char*>(p);
        }
      }
    }
    close(object->fd);
    if (!s.ok()) {
      shm_unlink(object->key.c_str());
      return s;
    }
    const std::string name = object->key.substr(1);
    absl::StatusOr<v1::SharedMemoryRegion> registered =
        client_->RegisterSharedMemory(name, object->key, 0, byte_size_);
    // The server holds its own mapping now (or never will): the key is no
    // longer needed.
    shm_unlink(object->key.c_str());
    if (!registered.ok() &&
        registered.status().code() == absl::StatusCode::kAlreadyExists) {
      if (base_ == nullptr) munmap(mapped, byte_size_);
      continue;
    }
    if (!registered.ok()) {
      if (base_ == nullptr) munmap(mapped, byte_size_);
      return registered.status();
    }
    base_ = mapped;
    key_ = object->key;
    region_ = name;
    return absl::OkStatus();
  }
  return absl::AlreadyExistsError(
      "every shared-memory region name tried is taken");
}

SharedMemoryBuffer::~SharedMemoryBuffer() {
  if (base_ == nullptr) return;
  (void)client_->UnregisterSharedMemory(region_);
  munmap(base_, byte_size_);
}

absl::Span<float> SharedMemoryBuffer::logits() {
  if (ElementSize(options_.logits_dtype) != sizeof(float)) return {};
  return absl::MakeSpan(reinterpret_cast<float*>(base_),
                        static_cast<size_t>(capacity_));
}

absl::Span<uint16_t> SharedMemoryBuffer::logits_half() {
  if (ElementSize(options_.logits_dtype) != sizeof(uint16_t)) return {};
  return absl::MakeSpan(reinterpret_cast<uint16_t*>(base_),
                        static_cast<size_t>(capacity_));
}

absl::Span<const float> SharedMemoryBuffer::gradient() const {
  return absl::MakeConstSpan(
      reinterpret_cast<const float*>(base_ + gradient_offset_),
      static_cast<size_t>(capacity_));
}

absl::Span<const uint16_t> SharedMemoryBuffer::gradient_half() const {
  return absl::MakeConstSpan(
      reinterpret_cast<const uint16_t*>(base_ + gradient_offset_),
      static_cast<size_t>(capacity_));
}

Logits SharedMemoryBuffer::LogitsRef(int64_t rows, int64_t cols) const {
  v1::SharedMemoryRef ref;
  ref.set_region(region_);
  ref.set_offset(0);
  ref.set_byte_size(static_cast<uint64_t>(rows * cols) *
                    ElementSize(options_.logits_dtype));
  return Logits::SharedMemory(std::move(ref), options_.logits_dtype, rows,
                              cols);
}

v1::SharedMemoryRef SharedMemoryBuffer::GradientRef(
    int64_t rows, int64_t cols, v1::DType gradient_dtype) const {
  v1::SharedMemoryRef ref;
  ref.set_region(region_);
  ref.set_offset(gradient_offset_);
  ref.set_byte_size(static_cast<uint64_t>(rows * cols) *
                    ElementSize(gradient_dtype));
  return ref;
}

absl::StatusOr<LossResult> SharedMemoryBuffer::ComputeLoss(
    const LossSource& source, int64_t rows, int64_t cols, const Target& target,
    LossOptions options) {
  if (rows < 1 || cols < 1 || rows > capacity_ || cols > capacity_ ||
      rows * cols > capacity_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a [", rows, ", ", cols, "] batch does not fit the ", capacity_,
        " elements of shared-memory buffer '", region_, "'"));
  }
  if (!options.gradient_out.empty()) {
    return absl::InvalidArgumentError(
        "SharedMemoryBuffer::ComputeLoss writes the gradient into the "
        "buffer: leave gradient_out empty");
  }
  if (ElementSize(options.gradient_dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradient_dtype ", DTypeText(options.gradient_dtype),
                     " is not FLOAT32, FLOAT16 or BFLOAT16"));
  }
  if (options.want_gradient) {
    options.gradient_shm = GradientRef(rows, cols, options.gradient_dtype);
  }
  absl::StatusOr<LossResult> result =
      client_->ComputeLoss(source, LogitsRef(rows, cols), target, options);
  // The server lost the region (it restarted, or the connection closed):
  // register the same memory again, once.
  if (!result.ok() &&
      result.status().code() == absl::StatusCode::kFailedPrecondition &&
      absl::StrContains(result.status().message(),
                        absl::StrCat("'", region_, "'"))) {
    const std::string old_region = region_;
    if (absl::Status s = Attach(); !s.ok()) return result;
    (void)client_->UnregisterSharedMemory(old_region);  // if it still exists
    if (options.want_gradient) {
      options.gradient_shm = GradientRef(rows, cols, options.gradient_dtype);
    }
    result =
        client_->ComputeLoss(source, LogitsRef(rows, cols), target, options);
  }
  return result;
}

}  // namespace cbloss::client
