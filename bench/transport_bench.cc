// Copyright 2026 The cbloss Authors.
//
// ComputeLoss with gradient through one real cbloss-server over its three
// transports (docs/SHARED_MEMORY.md, docs/PERFORMANCE.md "Transports"):
//
//   tcp    127.0.0.1, logits and gradient as bytes in the messages
//   unix   a Unix domain socket, the same bytes
//   shm    the same socket, logits in a registered shared-memory region
//          (Tensor.shm) and the gradient written into it (gradient_shm);
//          the messages carry only the references
//
// Each is timed with 1 caller (p50/p99 of sequential calls) and 8 callers
// sharing one channel (p50/p99 of every call, and calls per second). A shm
// call includes the client's copy of the logits into the region (what the
// Python client does once per call); the gradient is read where the server
// wrote it, so there is no copy back.
//
// Baselines from the same run: "echo", the cheapest RPC over the socket
// (ListSharedMemory of no regions: one round trip, no tensor), and
// "kernel", the engine alone on the batch (core/loss.h, with as many
// threads as the server's pool, as `cbloss-bench kernels` times it). A shm
// call cannot be faster than echo + kernel; the gap is the service's own
// work (decode the small request, resolve the references, encode).
//
// The bench uses the generated stub and shm_open/mmap directly, not the
// client library, so it measures the wire and the server only.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench.h"
#include "bench/server_process.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "core/class_weights.h"
#include "core/half.h"
#include "core/loss.h"
#include "core/thread_pool.h"
#include "grpcpp/grpcpp.h"

namespace cbloss::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kManyCallers = 8;

struct Size {
  int64_t batch, classes;
  int calls;  // sequential calls of the 1-caller measurement
};

// Where the gradient goes in a region: after the logits, cache-line aligned.
uint64_t GradientOffset(uint64_t logits_bytes) {
  return (logits_bytes + 63) / 64 * 64;
}

// A POSIX shared-memory object holding one caller's logits and gradient,
// registered with the server under `name`. The object's name is unlinked
// right after registering: the memory lives while both mappings do.
class Region {
 public:
  Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }

  // False (and a message on stderr) on failure.
  bool Create(v1::LossService::Stub* stub, const std::string& name,
              uint64_t size) {
    static std::atomic<int> counter{0};
    const std::string key =
        absl::StrCat("/cbloss-bench-", ::getpid(), "-", counter++);
    const int fd = ::shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
      std::perror("shm_open");
      return false;
    }
    bool ok = ::ftruncate(fd, static_cast<off_t>(size)) == 0;
    void* data =
        ok ? ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
           : MAP_FAILED;
    ::close(fd);
    if (data == MAP_FAILED) {
      std::perror("ftruncate/mmap");
      ::shm_unlink(key.c_str());
      return false;
    }
    data_ = static_cast<char*>(data);
    size_ = size;
    v1::RegisterSharedMemoryRequest request;
    request.set_name(name);
    request.set_key(key);
    request.set_offset(0);
    request.set_byte_size(size);
    grpc::ClientContext context;
    v1::SharedMemoryRegion region;
    const grpc::Status s =
        stub->RegisterSharedMemory(&context, request, &region);
    ::shm_unlink(key.c_str());
    if (!s.ok()) {
      std::fprintf(stderr, "RegisterSharedMemory failed: %s\n",
                   s.error_message().c_str());
      return false;
    }
    return true;
  }

  char* data() const { return data_; }

 private:
  char* data_ = nullptr;
  uint64_t size_ = 0;
};

// One shape and dtype's inputs: the bytes request, and the logits a shm
// caller copies into its region before each call.
struct Inputs {
  v1::ComputeLossRequest bytes_request;
  std::string logits;  // wire bytes of the logits
  std::vector<int32_t> labels;
  std::vector<int64_t> counts;
  uint64_t element_size = 4;
};

Inputs MakeInputs(const Size& size, bool bf16) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int32_t> label(
      0, static_cast<int32_t>(size.classes - 1));
  Inputs in;
  in.element_size = bf16 ? 2 : 4;
  const int64_t n = size.batch * size.classes;
  in.logits.resize(n * in.element_size);
  for (int64_t k = 0; k < n; ++k) {
    const float v = normal(rng);
    if (bf16) {
      const uint16_t h = FloatToBFloat16(v);
      std::memcpy(in.logits.data() + 2 * k, &h, 2);
    } else {
      std::memcpy(in.logits.data() + 4 * k, &v, 4);
    }
  }
  for (int64_t i = 0; i < size.batch; ++i) in.labels.push_back(label(rng));
  for (int64_t j = 0; j < size.classes; ++j) {
    in.counts.push_back(1 + (j * 37) % 5000);
  }
  v1::ComputeLossRequest& r = in.bytes_request;
  for (int64_t c : in.counts) r.mutable_class_counts()->add_counts(c);
  const v1::DType dtype = bf16 ? v1::DTYPE_BFLOAT16 : v1::DTYPE_FLOAT32;
  v1::Tensor* logits = r.mutable_logits();
  logits->set_dtype(dtype);
  logits->add_shape(size.batch);
  logits->add_shape(size.classes);
  logits->set_data(in.logits);
  for (int32_t y : in.labels) r.add_labels(y);
  r.set_want_gradient(true);
  r.set_gradient_dtype(dtype);
  return in;
}

// The request of a shm caller: the bytes request with references instead.
v1::ComputeLossRequest ShmRequest(const Inputs& in, const std::string& region) {
  v1::ComputeLossRequest r = in.bytes_request;
  const uint64_t bytes = in.logits.size();
  v1::Tensor* logits = r.mutable_logits();
  logits->clear_data();
  logits->mutable_shm()->set_region(region);
  logits->mutable_shm()->set_offset(0);
  logits->mutable_shm()->set_byte_size(bytes);
  r.mutable_gradient_shm()->set_region(region);
  r.mutable_gradient_shm()->set_offset(GradientOffset(bytes));
  r.mutable_gradient_shm()->set_byte_size(bytes);  // same dtype as the logits
  return r;
}

struct Timing {
  double p50_us = 0, p99_us = 0, rps = 0;
  bool ok = true;
};

Timing Summarize(std::vector<double> us, double seconds) {
  Timing t;
  if (us.empty()) {
    t.ok = false;
    return t;
  }
  std::sort(us.begin(), us.end());
  t.p50_us = us[us.size() / 2];
  t.p99_us = us[std::min(us.size() - 1, (us.size() * 99) / 100)];
  t.rps = static_cast<double>(us.size()) / seconds;
  return t;
}

// One caller's call: fills what it must, then one RPC. False on failure.
using Call = std::function<bool()>;

// `calls` sequential calls after two warm-up calls.
Timing TimeOneCaller(const Call& call, int calls) {
  for (int k = 0; k < 2; ++k) {
    if (!call()) return Timing{0, 0, 0, false};
  }
  std::vector<double> us;
  const auto start = Clock::now();
  for (int k = 0; k < calls; ++k) {
    const auto t0 = Clock::now();
    if (!call()) return Timing{0, 0, 0, false};
    us.push_back(
        std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return Summarize(std::move(us),
                   std::chrono::duration<double>(Clock::now() - start).count());
}

// kManyCallers threads, calls[c] each, for `seconds`.
Timing TimeManyCallers(const std::vector<Call>& calls, double seconds) {
  std::atomic<bool> failed{false};
  std::vector<std::vector<double>> us(calls.size());
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  for (size_t c = 0; c < calls.size(); ++c) {
    threads.emplace_back([&, c] {
      while (Clock::now() < end && !failed) {
        const auto t0 = Clock::now();
        if (!calls[c]()) {
          failed = true;
          return;
        }
        us[c].push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - t0)
                .count());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double elapsed =
      std::chrono::duration<double>(Clock::now() - start).count();
  if (failed) return Timing{0, 0, 0, false};
  std::vector<double> all;
  for (const auto& v : us) all.insert(all.end(), v.begin(), v.end());
  return Summarize(std::move(all), elapsed);
}

Call BytesCall(v1::LossService::Stub* stub,
               const v1::ComputeLossRequest* request) {
  return [stub, request] {
    grpc::ClientContext context;
    v1::ComputeLossResponse response;
    const grpc::Status s = stub->ComputeLoss(&context, *request, &response);
    if (!s.ok()) {
      std::fprintf(stderr, "ComputeLoss failed: %s\n",
                   s.error_message().c_str());
    }
    return s.ok();
  };
}

// Copies the logits into the region, then calls with references.
Call ShmCall(v1::LossService::Stub* stub, const v1::ComputeLossRequest* request,
             const std::string* logits, char* region) {
  return [=] {
    std::copy_n(logits->data(), logits->size(), region);
    grpc::ClientContext context;
    v1::ComputeLossResponse response;
    const grpc::Status s = stub->ComputeLoss(&context, *request, &response);
    if (!s.ok()) {
      std::fprintf(stderr, "ComputeLoss (shm) failed: %s\n",
                   s.error_message().c_str());
    }
    return s.ok();
  };
}

// Fastest of `reps` runs of `fn` after one warm-up, in µs (and the median
// in *median if given); -1 if it fails.
template <typename Fn>
double FastestMicros(Fn&& fn, int reps, double* median = nullptr) {
  std::vector<double> us;
  for (int k = 0; k < reps + 1; ++k) {
    const auto t0 = Clock::now();
    if (!fn()) return -1;
    const double t =
        std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (k > 0) us.push_back(t);
  }
  std::sort(us.begin(), us.end());
  if (median != nullptr) *median = us[us.size() / 2];
  return us.front();
}

// What a shm call costs besides the RPC, each part alone: the engine on
// the batch (softmax, labels, MEAN, effective-number weights: the server's
// defaults) on the server's thread count, the server's validation of the
// batch (LOSS.md section 7: finite logits, labels in range), and the
// client's copy of the logits into its region.
struct EngineTimes {
  double kernel_us = -1, validate_us = -1, copy_us = -1;
  // The kernel's median: on a busy machine the fastest run hides the waits
  // for a CPU that an RPC's p50 includes.
  double kernel_median_us = -1;
};

EngineTimes TimeEngine(const Inputs& in, const Size& size, bool bf16,
                       ThreadPool* pool, char* region, bool quick) {
  EngineTimes out;
  LossParams params;
  absl::StatusOr<ClassTerms> terms = MakeClassTerms(params, in.counts);
  LossBatch batch;
  batch.rows = size.batch;
  batch.cols = size.classes;
  std::vector<float> logits_f32;
  if (bf16) {
    batch.half_logits = in.logits.data();
    batch.half_logits_dtype = DType::kBFloat16;
  } else {
    logits_f32.resize(size.batch * size.classes);
    std::memcpy(logits_f32.data(), in.logits.data(), in.logits.size());
    batch.logits = logits_f32;
  }
  batch.labels = in.labels;
  if (!terms.ok() || !ValidateLossBatch(params, batch).ok()) return out;
  std::vector<float> gradient;
  std::string half_gradient;
  LossOutputs outputs;
  if (bf16) {
    half_gradient.resize(in.logits.size());
    outputs.half_gradient = half_gradient.data();
    outputs.half_gradient_dtype = DType::kBFloat16;
  } else {
    gradient.resize(size.batch * size.classes);
    outputs.gradient = absl::MakeSpan(gradient);
  }
  ComputeOptions options;
  options.pool = pool;
  const int reps = quick ? 3 : 50;
  out.kernel_us = FastestMicros(
      [&] { return ComputeLoss(params, *terms, batch, outputs, options).ok(); },
      reps, &out.kernel_median_us);
  out.validate_us = FastestMicros(
      [&] { return ValidateLossBatch(params, batch).ok(); }, reps);
  out.copy_us = FastestMicros(
      [&] {
        std::copy_n(in.logits.data(), in.logits.size(), region);
        return true;
      },
      reps);
  return out;
}

std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  grpc::ChannelArguments args;
  // As client/client.cc sets them (docs/PERFORMANCE.md).
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 16 << 20);
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   args);
}

std::string ServerPath(const BenchOptions& options) {
  if (!options.server_path.empty()) return options.server_path;
  char self[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return "cbloss-server";
  std::string path(self, len);
  return path.substr(0, path.rfind('/') + 1) + "cbloss-server";
}

// Records in the order they are measured; printed at the end.
class Report {
 public:
  explicit Report(bool json) : json_(json) {}

  void Call(const std::string& transport, const Size& size, const char* dtype,
            int callers, const Timing& t) {
    p50_[{transport, size.batch, size.classes, dtype, callers}] = t.p50_us;
    Add(absl::StrCat("{\"kind\": \"call\", \"transport\": \"", transport,
                     "\", \"batch\": ", size.batch,
                     ", \"classes\": ", size.classes, ", \"dtype\": \"", dtype,
                     "\", \"callers\": ", callers, ", \"p50_us\": ", t.p50_us,
                     ", \"p99_us\": ", t.p99_us,
                     ", \"throughput_rps\": ", t.rps, "}"),
        absl::StrFormat("%-6s %6d %6d %5s %7d %10.1f %10.1f %10.0f", transport,
                        size.batch, size.classes, dtype, callers, t.p50_us,
                        t.p99_us, t.rps));
  }

  void Echo(const Timing& t) {
    echo_us_ = t.p50_us;
    Add(absl::StrCat("{\"kind\": \"echo\", \"transport\": \"unix\", "
                     "\"rpc\": \"ListSharedMemory\", \"batch\": 32, "
                     "\"classes\": 10, \"callers\": 1, \"p50_us\": ",
                     t.p50_us, ", \"p99_us\": ", t.p99_us, "}"),
        absl::StrFormat("echo   (ListSharedMemory over unix) p50 %.1f p99 "
                        "%.1f us",
                        t.p50_us, t.p99_us));
  }

  void Kernel(const Size& size, const char* dtype, int threads,
              const EngineTimes& t) {
    kernel_us_[{size.batch, size.classes, dtype}] = t.kernel_us;
    Add(absl::StrCat("{\"kind\": \"kernel\", \"batch\": ", size.batch,
                     ", \"classes\": ", size.classes, ", \"dtype\": \"", dtype,
                     "\", \"threads\": ", threads,
                     ", \"kernel_us\": ", t.kernel_us,
                     ", \"kernel_median_us\": ", t.kernel_median_us,
                     ", \"validate_us\": ", t.validate_us,
                     ", \"copy_in_us\": ", t.copy_us, "}"),
        absl::StrFormat("kernel %6d %6d %5s %7d threads %10.1f us (median "
                        "%.1f; validate %.1f, client copy-in %.1f)",
                        size.batch, size.classes, dtype, threads, t.kernel_us,
                        t.kernel_median_us, t.validate_us, t.copy_us));
  }

  // The three goals of docs/PERFORMANCE.md "Transports", when measured.
  void Ratios() {
    const auto tcp = Find("tcp", 256, 1000, "f32");
    const auto shm = Find("shm", 256, 1000, "f32");
    const auto tcp_bf16 = Find("tcp", 256, 1000, "bf16");
    const auto kernel = kernel_us_.find({256, 1000, "f32"});
    if (tcp > 0 && shm > 0) {
      Ratio("shm_vs_tcp_256x1000_f32", tcp / shm, ">=", 3.0);
    }
    if (shm > 0 && echo_us_ > 0 && kernel != kernel_us_.end()) {
      Ratio("shm_vs_echo_plus_kernel_256x1000_f32",
            shm / (echo_us_ + kernel->second), "<=", 1.5);
    }
    if (tcp > 0 && tcp_bf16 > 0) {
      Ratio("bf16_vs_f32_tcp_256x1000", tcp / tcp_bf16, ">=", 1.6);
    }
  }

  void Print() const {
    if (json_) {
      std::printf("[");
      for (size_t k = 0; k < json_records_.size(); ++k) {
        std::printf("%s\n  %s", k == 0 ? "" : ",", json_records_[k].c_str());
      }
      std::printf("\n]\n");
    } else {
      std::printf("%-6s %6s %6s %5s %7s %10s %10s %10s\n", "wire", "batch",
                  "classes", "dtype", "callers", "p50_us", "p99_us", "calls/s");
      for (const std::string& row : rows_) std::printf("%s\n", row.c_str());
    }
  }

 private:
  using CallKey = std::tuple<std::string, int64_t, int64_t, std::string, int>;

  double Find(const std::string& transport, int64_t b, int64_t c,
              const std::string& dtype) const {
    const auto it = p50_.find({transport, b, c, dtype, 1});
    return it == p50_.end() ? -1 : it->second;
  }

  void Ratio(const std::string& name, double value, const char* op,
             double goal) {
    const bool met = op[0] == '>' ? value >= goal : value <= goal;
    Add(absl::StrCat("{\"kind\": \"ratio\", \"name\": \"", name,
                     "\", \"value\": ", value, ", \"goal\": \"", op, " ", goal,
                     "\", \"met\": ", met ? "true" : "false", "}"),
        absl::StrFormat("ratio  %-38s %6.2fx (goal %s %.1f: %s)", name, value,
                        op, goal, met ? "met" : "missed"));
  }

  void Add(std::string json, std::string row) {
    json_records_.push_back(std::move(json));
    rows_.push_back(std::move(row));
  }

  const bool json_;
  std::vector<std::string> json_records_, rows_;
  std::map<CallKey, double> p50_;
  std::map<std::tuple<int64_t, int64_t, std::string>, double> kernel_us_;
  double echo_us_ = -1;
};

// The stubs of the three transports; each has its own connection.
struct Stubs {
  std::unique_ptr<v1::LossService::Stub> tcp, unix_bytes, unix_shm;
};

// Measures one size and dtype on every transport. False on failure.
bool RunSize(const BenchOptions& options, const Size& size, bool bf16,
             const Stubs& stubs, ThreadPool* pool, int threads,
             Report* report) {
  const char* dtype = bf16 ? "bf16" : "f32";
  const Inputs in = MakeInputs(size, bf16);
  const uint64_t logits_bytes = in.logits.size();
  const uint64_t region_bytes = GradientOffset(logits_bytes) + logits_bytes;
  // One region per caller, registered over the shm connection.
  std::vector<std::unique_ptr<Region>> regions;
  std::vector<v1::ComputeLossRequest> shm_requests;
  for (int c = 0; c < kManyCallers; ++c) {
    const std::string name = absl::StrCat("bench-", size.batch, "x",
                                          size.classes, "-", dtype, "-", c);
    regions.push_back(std::make_unique<Region>());
    if (!regions.back()->Create(stubs.unix_shm.get(), name, region_bytes)) {
      return false;
    }
    shm_requests.push_back(ShmRequest(in, name));
  }
  const int calls = options.quick ? 3 : size.calls;
  const double seconds = options.quick ? 0.1 : 1.5;
  struct Transport {
    const char* name;
    std::vector<Call> calls;  // one per caller
  };
  std::vector<Transport> transports = {{"tcp", {}}, {"unix", {}}, {"shm", {}}};
  for (int c = 0; c < kManyCallers; ++c) {
    transports[0].calls.push_back(
        BytesCall(stubs.tcp.get(), &in.bytes_request));
    transports[1].calls.push_back(
        BytesCall(stubs.unix_bytes.get(), &in.bytes_request));
    transports[2].calls.push_back(ShmCall(stubs.unix_shm.get(),
                                          &shm_requests[c], &in.logits,
                                          regions[c]->data()));
  }
  for (const Transport& t : transports) {
    const Timing one = TimeOneCaller(t.calls[0], calls);
    if (!one.ok) return false;
    report->Call(t.name, size, dtype, 1, one);
  }
  for (const Transport& t : transports) {
    const Timing many = TimeManyCallers(t.calls, seconds);
    if (!many.ok) return false;
    report->Call(t.name, size, dtype, kManyCallers, many);
  }
  const EngineTimes engine =
      TimeEngine(in, size, bf16, pool, regions[0]->data(), options.quick);
  if (engine.kernel_us < 0 || engine.validate_us < 0) {
    std::fprintf(stderr, "kernel setup failed\n");
    return false;
  }
  report->Kernel(size, dtype, threads, engine);
  // Unregister this size's regions (the bench's 8 x 2 x 3 stay far below
  // the limits anyway).
  v1::UnregisterSharedMemoryRequest all;
  grpc::ClientContext context;
  v1::UnregisterSharedMemoryResponse unused;
  return stubs.unix_shm->UnregisterSharedMemory(&context, all, &unused).ok();
}

// --sizes ("BxC,..."; empty: the default three) into `sizes`, each with
// enough sequential calls for ~0.3 s of a 256x1000 call's worth of
// elements. False if malformed.
bool ParseSizes(const std::string& text, std::vector<Size>* sizes) {
  if (text.empty()) {
    *sizes = {{32, 10, 2000}, {256, 1000, 300}, {4096, 1000, 40}};
    return true;
  }
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> bc =
        absl::StrSplit(item, absl::MaxSplits('x', 1));
    Size size{0, 0, 0};
    if (!absl::SimpleAtoi(bc.first, &size.batch) ||
        !absl::SimpleAtoi(bc.second, &size.classes) || size.batch < 1 ||
        size.classes < 1) {
      return false;
    }
    size.calls = static_cast<int>(std::clamp<int64_t>(
        int64_t{80000000} / (size.batch * size.classes), 20, 2000));
    sizes->push_back(size);
  }
  return !sizes->empty();
}

}  // namespace

int RunTransports(const BenchOptions& options) {
  std::vector<Size> sizes;
  if (!ParseSizes(options.sizes, &sizes)) {
    std::fprintf(stderr, "--sizes: expected BxC[,BxC...], got '%s'\n",
                 options.sizes.c_str());
    return 2;
  }
  testing::ServerProcessOptions server_options;
  server_options.binary = ServerPath(options);
  testing::ServerProcess server(server_options);
  const std::string socket = server.dir() + "/s.sock";
  if (absl::Status s =
          server.Start({"--log_level=error", "--listen=unix:" + socket,
                        "--allow_shared_memory"});
      !s.ok()) {
    std::fprintf(stderr, "cannot start %s: %s\n", server_options.binary.c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  Stubs stubs;
  stubs.tcp = v1::LossService::NewStub(Connect(server.target()));
  stubs.unix_bytes = v1::LossService::NewStub(Connect("unix:" + socket));
  stubs.unix_shm = v1::LossService::NewStub(Connect("unix:" + socket));

  // The server's pool has hardware_concurrency threads (--compute_threads'
  // default); the kernel baseline gets as many.
  const int threads =
      std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::unique_ptr<ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<ThreadPool>(threads);

  Report report(options.json);
  {
    v1::ListSharedMemoryRequest request;
    Call echo = [&] {
      grpc::ClientContext context;
      v1::ListSharedMemoryResponse response;
      return stubs.unix_shm->ListSharedMemory(&context, request, &response)
          .ok();
    };
    const Timing t = TimeOneCaller(echo, options.quick ? 3 : 2000);
    if (!t.ok) {
      std::fprintf(stderr, "ListSharedMemory failed\n");
      return 1;
    }
    report.Echo(t);
  }
  for (const Size& size : sizes) {
    for (bool bf16 : {false, true}) {
      if (!RunSize(options, size, bf16, stubs, pool.get(), threads, &report)) {
        return 1;
      }
    }
  }
  report.Ratios();
  report.Print();
  return 0;
}

}  // namespace cbloss::bench
