// Copyright 2026 The cbloss Authors.
//
// cbloss.v1.LossService (API.md section 1) on gRPC's callback API.
//
// Every method is registered "raw": the service decodes request bytes
// itself, so a malformed message gets INVALID_ARGUMENT naming the message
// type (gRPC's own decoding would answer UNIMPLEMENTED with no message), and
// a StreamLoss stream answers it in-band and goes on.
//
// Calls enter through two places, the unary reactor of every unary method
// and StreamLoss's; both first Admit the call (authorization, server/auth.h).
//
// Reads and small computations run on gRPC's own threads; dataset writes
// (which wait for fsync) run on `io_pool`; large computations run on
// `compute_pool`, which also splits their rows. No gRPC thread waits on
// storage or on a large batch.
//
// Thread-safety: safe for concurrent calls, as gRPC makes them.

#ifndef CBLOSS_SERVER_LOSS_SERVICE_H_
#define CBLOSS_SERVER_LOSS_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "core/thread_pool.h"
#include "server/auth.h"
#include "server/compute_request.h"
#include "server/dataset_registry.h"
#include "server/grpc_tuning.h"  // for main.cc: ApplyServerTuning
#include "server/run_registry.h"
#include "server/shared_memory.h"

namespace cbloss::server {

struct LossServiceOptions {
  // Requests with at most this many logits run on the calling gRPC thread.
  int64_t inline_elements = 16384;
  // ListDatasets and ListRuns page sizes.
  int default_page_size = 100;
  int max_page_size = 1000;
  // Bounds (RESOURCE_EXHAUSTED beyond them), so load cannot run the server
  // out of memory: logits elements (B * C) of one request, and computations
  // (ComputeLoss calls and StreamLoss requests) admitted at once.
  int64_t max_request_elements = int64_t{1} << 24;
  int max_concurrent_computations = 64;
  // If set, each successful computation adds its logits elements (metrics).
  std::atomic<int64_t>* elements_computed = nullptr;
  // If set and enabled, every call is admitted by it first, at the access
  // level server/auth.h's table gives its method; a refusal is the call's
  // status (UNAUTHENTICATED or PERMISSION_DENIED). Must outlive the service.
  const TokenAuthorizer* authorizer = nullptr;
  // Shared-memory tensors (API.md section 5.3). Null: shared memory is off
  // (its RPCs and any request using it are FAILED_PRECONDITION). Must
  // outlive the service.
  SharedMemoryRegistry* shared_memory = nullptr;
  // Who a call's peer is (grpc::ServerContext::peer(): "fd:N" for a Unix
  // socket connection, server/unix_listener.h; "" for the HTTP gateway).
  // Unset: every caller is a TCP caller.
  std::function<PeerIdentity(absl::string_view peer)> identify_peer;
};

namespace internal {
// `Service` with every method of `Methods` registered raw: one list of the
// methods instead of a nest of templates.
template <template <class> class... Methods>
struct WithRawMethods {
  using Type = v1::LossService::Service;
};
template <template <class> class First, template <class> class... Rest>
struct WithRawMethods<First, Rest...> {
  using Type = First<typename WithRawMethods<Rest...>::Type>;
};
using LS = v1::LossService;
using RawLossService = WithRawMethods<
    LS::WithRawCallbackMethod_PutDataset, LS::WithRawCallbackMethod_GetDataset,
    LS::WithRawCallbackMethod_ListDatasets,
    LS::WithRawCallbackMethod_DeleteDataset,
    LS::WithRawCallbackMethod_AddClassCounts,
    LS::WithRawCallbackMethod_GetClassWeights,
    LS::WithRawCallbackMethod_ComputeLoss, LS::WithRawCallbackMethod_StreamLoss,
    LS::WithRawCallbackMethod_CreateRun, LS::WithRawCallbackMethod_GetRun,
    LS::WithRawCallbackMethod_ListRuns, LS::WithRawCallbackMethod_DeleteRun,
    LS::WithRawCallbackMethod_RegisterSharedMemory,
    LS::WithRawCallbackMethod_UnregisterSharedMemory,
    LS::WithRawCallbackMethod_ListSharedMemory>::Type;
}  // namespace internal

// Called once with a handler's final status.
using Done = absl::AnyInvocable<void(absl::Status) &&>;

class LossServiceImpl final : public internal::RawLossService {
 public:
  // `runs` may be null (a service without runs: its RPCs are UNIMPLEMENTED
  // and a request naming a run is NOT_FOUND).
  LossServiceImpl(DatasetRegistry* registry, RunRegistry* runs,
                  ThreadPool* compute_pool, ThreadPool* io_pool,
                  LossServiceOptions options = {});

  // gRPC entry points: decode, call the typed handler below, encode.
  grpc::ServerUnaryReactor* PutDataset(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetDataset(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListDatasets(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteDataset(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* AddClassCounts(grpc::CallbackServerContext* context,
                                           const grpc::ByteBuffer* request,
                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetClassWeights(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ComputeLoss(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamLoss(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* CreateRun(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteRun(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* RegisterSharedMemory(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* UnregisterSharedMemory(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListSharedMemory(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;

  // Typed handlers. Each calls `done` exactly once, on this thread or on a
  // pool; `request` and `response` live until then.
  void HandlePutDataset(grpc::CallbackServerContext* context,
                        const v1::PutDatasetRequest* request,
                        v1::Dataset* response, Done done);
  void HandleGetDataset(grpc::CallbackServerContext* context,
                        const v1::GetDatasetRequest* request,
                        v1::Dataset* response, Done done);
  void HandleListDatasets(grpc::CallbackServerContext* context,
                          const v1::ListDatasetsRequest* request,
                          v1::ListDatasetsResponse* response, Done done);
  void HandleDeleteDataset(grpc::CallbackServerContext* context,
                           const v1::DeleteDatasetRequest* request,
                           v1::DeleteDatasetResponse* response, Done done);
  void HandleAddClassCounts(grpc::CallbackServerContext* context,
                            const v1::AddClassCountsRequest* request,
                            v1::Dataset* response, Done done);
  void HandleGetClassWeights(grpc::CallbackServerContext* context,
                             const v1::GetClassWeightsRequest* request,
                             v1::ClassWeights* response, Done done);
  void HandleCreateRun(grpc::CallbackServerContext* context,
                       const v1::CreateRunRequest* request, v1::Run* response,
                       Done done);
  void HandleGetRun(grpc::CallbackServerContext* context,
                    const v1::GetRunRequest* request, v1::Run* response,
                    Done done);
  void HandleListRuns(grpc::CallbackServerContext* context,
                      const v1::ListRunsRequest* request,
                      v1::ListRunsResponse* response, Done done);
  void HandleDeleteRun(grpc::CallbackServerContext* context,
                       const v1::DeleteRunRequest* request,
                       v1::DeleteRunResponse* response, Done done);
  // Shared memory (API.md section 5.3): the caller is the call's peer
  // (options.identify_peer).
  void HandleRegisterSharedMemory(
      grpc::CallbackServerContext* context,
      const v1::RegisterSharedMemoryRequest* request,
      v1::SharedMemoryRegion* response, Done done);
  void HandleUnregisterSharedMemory(
      grpc::CallbackServerContext* context,
      const v1::UnregisterSharedMemoryRequest* request,
      v1::UnregisterSharedMemoryResponse* response, Done done);
  void HandleListSharedMemory(grpc::CallbackServerContext* context,
                              const v1::ListSharedMemoryRequest* request,
                              v1::ListSharedMemoryResponse* response,
                              Done done);
  // ComputeLoss and each StreamLoss request: small batches inline, large
  // ones on the compute pool. An accumulating request is admitted again at
  // kAccumulate, and its update applied to its run once it has succeeded.
  // With `detached`, a bytes gradient goes there instead of into
  // `response` (see DetachedGradient in server/compute_request.h).
  // `admitted`: the caller has already checked the accumulate token (the
  // HTTP gateway, whose context carries no metadata).
  void HandleComputeLoss(grpc::CallbackServerContext* context,
                         const v1::ComputeLossRequest* request,
                         v1::ComputeLossResponse* response, Done done,
                         DetachedGradient* detached = nullptr,
                         bool admitted = false);

 private:
  // One unary call of `method`: admit, decode, run `handler`, encode.
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* in,
                                       grpc::ByteBuffer* out,
                                       absl::string_view method,
                                       Handler&& handler);
  // OK if the call may go on: the authorizer's verdict for `method`.
  absl::Status Admit(const grpc::CallbackServerContext& context,
                     absl::string_view method) const;
  // The memory rights of the call's peer.
  PeerIdentity PeerOf(const grpc::CallbackServerContext& context) const;
  absl::Status Compute(grpc::CallbackServerContext* context,
                       const v1::ComputeLossRequest& request,
                       v1::ComputeLossResponse* response,
                       DetachedGradient* detached);

  DatasetRegistry* const registry_;
  RunRegistry* const runs_;
  ThreadPool* const compute_pool_;
  ThreadPool* const io_pool_;
  const LossServiceOptions options_;
  std::atomic<int> computations_{0};  // admitted and not finished
};

// Logs a failed call ("ComputeLoss failed: INVALID_ARGUMENT: ...") and
// converts to a grpc::Status.
grpc::Status FinishStatus(absl::string_view method, const absl::Status& s);

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_LOSS_SERVICE_H_
