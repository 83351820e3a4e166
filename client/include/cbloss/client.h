// Copyright 2026 The cbloss Authors.
//
// The C++ client of cbloss.v1.LossService (docs/spec/API.md): dataset
// calls, class weights, and batched loss + gradient computation from spans.
//
// A Client owns one gRPC channel, reused for every call. Idempotent calls
// (GetDataset, ListDatasets, GetClassWeights, ComputeLoss) are retried on
// UNAVAILABLE through gRPC's service config, and calls are spread round-robin
// over every address a target resolves to, so
// `ipv4:10.0.0.1:50051,10.0.0.2:50051` or `dns:///cbloss-headless:50051` reach
// every replica.
//
// Thread-safety: a Client is safe for concurrent use from any number of
// threads. A LossStream is not: give each training loop its own.
//
// Example:
//   absl::StatusOr<std::unique_ptr<cbloss::Client>> client =
//       cbloss::Client::Create("127.0.0.1:50051");
//   cbloss::LossOptions options;
//   options.config.set_loss_type(cbloss::v1::LOSS_TYPE_FOCAL);
//   std::vector<float> grad(B * C);
//   options.gradient_out = absl::MakeSpan(grad);
//   absl::StatusOr<cbloss::LossResult> r = (*client)->ComputeLoss(
//       cbloss::LossSource::Dataset("cifar10-lt"),
//       cbloss::Logits::Float32(logits, B, C), cbloss::Labels(labels),
//       options);
//   if (r.ok()) std::cout << r->loss;   // grad now holds dL/dlogits

#ifndef CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_H_
#define CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "cbloss/v1/cbloss.pb.h"
#include "grpcpp/grpcpp.h"

namespace cbloss {

struct ClientOptions {
  // Deadline of each call unless the call says otherwise.
  absl::Duration default_deadline = absl::Seconds(30);
  // Send and receive limit, MiB (match the server's --max_message_mb).
  int max_message_mb = 64;
  // Retry idempotent calls on UNAVAILABLE (up to 5 attempts, backoff).
  bool retry_unavailable = true;
  // gRPC load-balancing policy over the target's addresses.
  std::string load_balancing_policy = "round_robin";
  // Channel credentials; null means plaintext, unless `tls` is set.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // TLS from PEM text (used when `credentials` is null and `tls` is true):
  // the roots that sign the server's certificate (empty: the system's), and
  // for mutual TLS this client's certificate chain and private key.
  bool tls = false;
  std::string tls_root_certs_pem;
  std::string tls_client_cert_pem;
  std::string tls_client_key_pem;
  // The name to check the server's certificate against, if not the target's
  // host (e.g. "cbloss" when the target is an IP address).
  std::string tls_server_name;
  // Bearer token sent on every call as `authorization: Bearer <token>`
  // (servers started with --admin_token_file / --compute_token_file). Use
  // with TLS: on a plaintext channel the token crosses the network in clear.
  std::string token;
};

// ClientOptions::tls and its PEM fields from files (empty path: not used;
// cert and key come together), for tools that take file flags.
absl::Status LoadTlsFiles(const std::string& root_ca_path,
                          const std::string& cert_path,
                          const std::string& key_path, ClientOptions* options);
// A token file's text without trailing whitespace; an error if empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Where the class counts come from: a stored dataset, or counts given inline.
struct LossSource {
  static LossSource Dataset(std::string name) {
    LossSource s;
    s.dataset = std::move(name);
    return s;
  }
  static LossSource Counts(std::vector<int64_t> counts) {
    LossSource s;
    s.counts = std::move(counts);
    return s;
  }
  std::string dataset;          // non-empty: a stored dataset
  std::vector<int64_t> counts;  // otherwise: inline counts
};

// A [rows, cols] matrix of logits in float32, or as raw float16 / bfloat16
// bit patterns (sent as such: half the bytes).
struct Logits {
  static Logits Float32(absl::Span<const float> values, int64_t rows,
                        int64_t cols) {
    Logits l;
    l.f32 = values;
    l.rows = rows;
    l.cols = cols;
    return l;
  }
  static Logits Half(v1::DType dtype, absl::Span<const uint16_t> bits,
                     int64_t rows, int64_t cols) {
    Logits l;
    l.dtype = dtype;
    l.half = bits;
    l.rows = rows;
    l.cols = cols;
    return l;
  }
  v1::DType dtype = v1::DTYPE_FLOAT32;
  absl::Span<const float> f32;
  absl::Span<const uint16_t> half;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Labels (one class index per row) or targets (float32, same shape as the
// logits: multi-label or soft targets).
struct Target {
  absl::Span<const int32_t> labels;
  absl::Span<const float> targets;
};
inline Target Labels(absl::Span<const int32_t> labels) { return {labels, {}}; }
inline Target Targets(absl::Span<const float> targets) { return {{}, targets}; }

struct LossOptions {
  // Overrides of the dataset's defaults (set fields only).
  v1::LossConfig config;
  absl::Span<const float> sample_weights;  // empty: all 1
  absl::Span<const float> upstream;        // reduction NONE only
  bool want_gradient = true;
  bool want_per_sample_losses = false;
  // FLOAT32 by default; FLOAT16 / BFLOAT16 return 16-bit patterns.
  v1::DType gradient_dtype = v1::DTYPE_FLOAT32;
  // If non-empty (rows * cols floats), a float32 gradient is written here
  // instead of into LossResult::gradient.
  absl::Span<float> gradient_out;
  absl::optional<uint64_t> expected_dataset_version;
  absl::optional<int32_t> epoch;
  absl::optional<absl::Duration> deadline;
};

struct LossResult {
  double loss = 0.0;
  int64_t num_samples = 0;
  uint64_t dataset_version = 0;         // 0 for inline counts
  std::vector<float> gradient;          // float32, unless gradient_out given
  std::vector<uint16_t> gradient_half;  // FLOAT16 / BFLOAT16 gradient bits
  std::vector<float> per_sample_losses;
  std::vector<double> class_weights;
  v1::LossConfig resolved_config;  // every field set: what was used
};

class LossStream;

class Client {
 public:
  // Creates the channel (it connects lazily, on the first call).
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      const std::string& target, ClientOptions options = {});

  absl::StatusOr<v1::Dataset> PutDataset(
      const v1::Dataset& dataset,
      absl::optional<uint64_t> expected_version = absl::nullopt);
  absl::StatusOr<v1::Dataset> GetDataset(const std::string& name);
  // Every dataset, following pages.
  absl::StatusOr<std::vector<v1::Dataset>> ListDatasets();
  absl::Status DeleteDataset(
      const std::string& name,
      absl::optional<uint64_t> expected_version = absl::nullopt);
  absl::StatusOr<v1::Dataset> AddClassCounts(const std::string& name,
                                             absl::Span<const int64_t> deltas,
                                             absl::Span<const int32_t> labels);
  absl::StatusOr<v1::ClassWeights> GetClassWeights(
      const LossSource& source, const v1::LossConfig& config = {});

  absl::StatusOr<LossResult> ComputeLoss(const LossSource& source,
                                         const Logits& logits,
                                         const Target& target,
                                         const LossOptions& options = {});

  // OK if the server's overall health is SERVING.
  absl::Status CheckHealth();

  // A StreamLoss call for one training loop.
  std::unique_ptr<LossStream> OpenLossStream();

  v1::LossService::Stub* stub() { return stub_.get(); }
  const ClientOptions& options() const { return options_; }

 private:
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);
  void PrepareContext(grpc::ClientContext* context,
                      absl::optional<absl::Duration> deadline) const;
  // The metadata every call carries (the bearer token).
  void AddCallMetadata(grpc::ClientContext* context) const;

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::LossService::Stub> stub_;
  friend class LossStream;
};

// One open StreamLoss call: Compute sends one request and waits for its
// response. Not thread-safe. The stream closes when destroyed.
//
// Each Compute has a deadline (LossOptions::deadline, else the client's
// default): a watchdog thread cancels the stream when one passes, so a hung
// server costs DEADLINE_EXCEEDED, never a hung training loop. A cancelled
// stream is closed; open a new one to go on.
class LossStream {
 public:
  ~LossStream();
  absl::StatusOr<LossResult> Compute(const LossSource& source,
                                     const Logits& logits, const Target& target,
                                     const LossOptions& options = {});
  // Half-closes the stream and returns its final status.
  absl::Status Close();

 private:
  explicit LossStream(Client* client);
  void Watch();

  const absl::Duration default_deadline_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::ComputeLossRequest, v1::ComputeLossResponse>>
      stream_;
  bool closed_ = false;

  // Standard mutex: ThreadSanitizer cannot see Debian's uninstrumented
  // absl::Mutex. Everything below up to watchdog_ is guarded by mu_.
  std::mutex mu_;
  std::condition_variable changed_;  // deadline_, call_ or stopping_ changed
  // The pending Compute's deadline, if one is pending.
  absl::optional<absl::Time> deadline_;
  uint64_t call_ = 0;  // which Compute is pending
  bool timed_out_ = false;
  bool stopping_ = false;
  std::thread watchdog_;
  friend class Client;
};

// Builds the wire request of ComputeLoss (shared by unary and stream calls;
// handy for tools that want the raw message).
absl::StatusOr<v1::ComputeLossRequest> MakeComputeLossRequest(
    const LossSource& source, const Logits& logits, const Target& target,
    const LossOptions& options);

// Unpacks a response into a LossResult (writing into options.gradient_out).
absl::StatusOr<LossResult> ReadComputeLossResponse(
    const v1::ComputeLossResponse& response, const LossOptions& options);

// grpc::Status to absl::Status (same codes and message).
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace cbloss

#endif  // CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_H_
