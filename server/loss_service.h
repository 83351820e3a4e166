// Copyright 2026 The cbloss Authors.
//
// cbloss.v1.LossService (API.md section 1) on gRPC's callback API. Reads and
// small computations run on gRPC's own threads; dataset writes (which wait
// for fsync) run on `io_pool`; large computations run on `compute_pool`,
// which also splits their rows. No gRPC thread ever waits on storage or on a
// large batch.
//
// Thread-safety: safe for concurrent calls, as gRPC makes them.

#ifndef CBLOSS_SERVER_LOSS_SERVICE_H_
#define CBLOSS_SERVER_LOSS_SERVICE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "core/thread_pool.h"
#include "server/dataset_registry.h"

namespace cbloss {

struct LossServiceOptions {
  // Requests with at most this many logits run on the calling gRPC thread.
  int64_t inline_elements = 16384;
  // ListDatasets page sizes.
  int default_page_size = 100;
  int max_page_size = 1000;
};

class LossServiceImpl final : public v1::LossService::CallbackService {
 public:
  LossServiceImpl(DatasetRegistry* registry, ThreadPool* compute_pool,
                  ThreadPool* io_pool, LossServiceOptions options = {});

  grpc::ServerUnaryReactor* PutDataset(grpc::CallbackServerContext* context,
                                       const v1::PutDatasetRequest* request,
                                       v1::Dataset* response) override;
  grpc::ServerUnaryReactor* GetDataset(grpc::CallbackServerContext* context,
                                       const v1::GetDatasetRequest* request,
                                       v1::Dataset* response) override;
  grpc::ServerUnaryReactor* ListDatasets(
      grpc::CallbackServerContext* context,
      const v1::ListDatasetsRequest* request,
      v1::ListDatasetsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteDataset(
      grpc::CallbackServerContext* context,
      const v1::DeleteDatasetRequest* request,
      v1::DeleteDatasetResponse* response) override;
  grpc::ServerUnaryReactor* AddClassCounts(
      grpc::CallbackServerContext* context,
      const v1::AddClassCountsRequest* request,
      v1::Dataset* response) override;
  grpc::ServerUnaryReactor* GetClassWeights(
      grpc::CallbackServerContext* context,
      const v1::GetClassWeightsRequest* request,
      v1::ClassWeights* response) override;
  grpc::ServerUnaryReactor* ComputeLoss(
      grpc::CallbackServerContext* context,
      const v1::ComputeLossRequest* request,
      v1::ComputeLossResponse* response) override;
  grpc::ServerBidiReactor<v1::ComputeLossRequest, v1::ComputeLossResponse>*
  StreamLoss(grpc::CallbackServerContext* context) override;

  // Runs one ComputeLoss request to completion and then calls `done` with
  // its status, on this thread (small requests) or on the compute pool.
  // Used by ComputeLoss and StreamLoss.
  void RunCompute(grpc::CallbackServerContext* context,
                  const v1::ComputeLossRequest* request,
                  v1::ComputeLossResponse* response,
                  absl::AnyInvocable<void(absl::Status) &&> done);

 private:
  absl::Status Compute(grpc::CallbackServerContext* context,
                       const v1::ComputeLossRequest& request,
                       v1::ComputeLossResponse* response);

  DatasetRegistry* const registry_;
  ThreadPool* const compute_pool_;
  ThreadPool* const io_pool_;
  const LossServiceOptions options_;
};

// Logs a failed call ("ComputeLoss failed: INVALID_ARGUMENT: ...") and
// converts to a grpc::Status.
grpc::Status FinishStatus(absl::string_view method, const absl::Status& s);

}  // namespace cbloss

#endif  // CBLOSS_SERVER_LOSS_SERVICE_H_
