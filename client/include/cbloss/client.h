// Copyright 2026 The cbloss Authors.
//
// The C++ client of cbloss.v1.LossService (docs/spec/API.md): dataset
// calls, class weights, and batched loss + gradient computation from spans.
// Everything returns an absl::Status / absl::StatusOr carrying the server's
// gRPC code and message; nothing throws.
//
// A Client owns one gRPC channel, reused for every call. Idempotent calls
// (GetDataset, ListDatasets, GetClassWeights, ComputeLoss, GetRun, ListRuns)
// are retried on UNAVAILABLE through gRPC's service config, and calls are
// spread round-robin over every address a target resolves to, so
// `ipv4:10.0.0.1:50051,10.0.0.2:50051` or `dns:///cbloss-headless:50051` reach
// every replica. A `unix:/path` target reaches a server on the same host
// over a Unix domain socket (plaintext, unless `credentials` or `tls` say
// otherwise); only there can shared memory be used.
//
// Calls that accumulate into a run (LossOptions::accumulate) are not
// idempotent and are never retried (LOSS.md section 11): they go on a second
// channel, created on first use with the same target and credentials but
// without the retry policy (`grpc.enable_retries` 0). LossStreams use that
// channel too, since any of their requests may accumulate. A failed
// accumulating call may or may not have been applied: the run's version
// (GetRun) tells which.
//
// Thread-safety: a Client is safe for concurrent use from any number of
// threads. A LossStream is not: give each training loop its own.
//
// Example:
//   namespace cbc = cbloss::client;
//   absl::StatusOr<std::unique_ptr<cbc::Client>> client =
//       cbc::Client::Create("127.0.0.1:50051");
//   cbc::LossOptions options;
//   options.config.set_loss_type(cbloss::v1::LOSS_TYPE_FOCAL);
//   std::vector<float> grad(B * C);
//   options.gradient_out = absl::MakeSpan(grad);
//   absl::StatusOr<cbc::LossResult> r = (*client)->ComputeLoss(
//       cbc::LossSource::Dataset("cifar10-lt"),
//       cbc::Logits::Float32(logits, B, C), cbc::Labels(labels), options);
//   if (r.ok()) std::cout << r->loss;   // grad now holds dL/dlogits

#ifndef CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_H_
#define CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/optional.h"
#include "absl/types/span.h"
#include "cbloss/client_options.h"
#include "cbloss/loss_call.h"
#include "cbloss/v1/cbloss.pb.h"

namespace cbloss::client {

class LossStream;

class Client {
 public:
  // Creates the channel (it connects lazily, on the first call).
  // INVALID_ARGUMENT for an empty target, a max_message_mb outside
  // [1, 2047], a token with whitespace, or a client certificate without its
  // key.
  static absl::StatusOr<std::unique_ptr<Client>> Create(
      const std::string& target, ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

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

  // With options.accumulate, sent once on the no-retry channel.
  absl::StatusOr<LossResult> ComputeLoss(const LossSource& source,
                                         const Logits& logits,
                                         const Target& target,
                                         const LossOptions& options = {});

  // Runs (LOSS.md section 11): statistics a training run accumulates.
  // `run` gives name, dataset and/or num_classes, and defaults; the stored
  // Run (statistics zero, version 1) comes back. Not retried.
  absl::StatusOr<v1::Run> CreateRun(const v1::Run& run);
  absl::StatusOr<v1::Run> GetRun(const std::string& name);
  // Every run (only those of `dataset` if not empty), following pages.
  absl::StatusOr<std::vector<v1::Run>> ListRuns(
      const std::string& dataset = "");
  // One page, as the server returns it (request.page_token from the
  // previous page's next_page_token).
  absl::StatusOr<v1::ListRunsResponse> ListRunsPage(
      const v1::ListRunsRequest& request);
  // Not retried.
  absl::Status DeleteRun(
      const std::string& name,
      absl::optional<uint64_t> expected_version = absl::nullopt);

  // Shared-memory regions (API.md section 5.3), for a server on the same
  // host reached over a `unix:` target and started with
  // --allow_shared_memory. Register maps [offset, offset + byte_size) of the
  // POSIX shared-memory object `key` (shm_open's name, under the server's
  // --shared_memory_prefix, owned by this process's uid) as region `name`;
  // Logits::SharedMemory and LossOptions::gradient_shm then refer to it.
  // A region belongs to the caller's uid and lives until unregistered or
  // until the connection it was registered on closes. SharedMemoryBuffer
  // (cbloss/shared_memory.h) does all of this for one batch buffer.
  // Not retried.
  absl::StatusOr<v1::SharedMemoryRegion> RegisterSharedMemory(
      const std::string& name, const std::string& key, uint64_t offset,
      uint64_t byte_size);
  // Empty name: every region of the caller's uid. NOT_FOUND for a name the
  // caller has no region of.
  absl::Status UnregisterSharedMemory(const std::string& name);
  // The caller's regions, ordered by name.
  absl::StatusOr<std::vector<v1::SharedMemoryRegion>> ListSharedMemory();

  // OK if the server's overall health is SERVING.
  absl::Status CheckHealth();

  // A StreamLoss call for one training loop.
  std::unique_ptr<LossStream> OpenLossStream();

  const ClientOptions& options() const;

 private:
  class Impl;
  friend class LossStream;
  explicit Client(std::unique_ptr<Impl> impl);

  const std::unique_ptr<Impl> impl_;
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
  LossStream(const LossStream&) = delete;
  LossStream& operator=(const LossStream&) = delete;
  ~LossStream();

  absl::StatusOr<LossResult> Compute(const LossSource& source,
                                     const Logits& logits, const Target& target,
                                     const LossOptions& options = {});
  // Half-closes the stream and returns its final status.
  absl::Status Close();

 private:
  class Impl;
  friend class Client;
  explicit LossStream(std::unique_ptr<Impl> impl);

  const std::unique_ptr<Impl> impl_;
};

}  // namespace cbloss::client

#endif  // CBLOSS_CLIENT_INCLUDE_CBLOSS_CLIENT_H_
