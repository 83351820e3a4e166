// Copyright 2026 The cbloss Authors.

#include "server/loss_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "server/compute_request.h"
#include "spdlog/spdlog.h"

namespace cbloss::server {
namespace {

absl::optional<uint64_t> Expected(bool has, uint64_t value) {
  if (!has) return absl::nullopt;
  return value;
}

bool DeadlinePassed(grpc::CallbackServerContext* context) {
  return context->deadline() <= std::chrono::system_clock::now();
}

// ListDatasets page tokens are the last name of the page, base64url-encoded:
// opaque to clients, stable across restarts.
std::string EncodePageToken(absl::string_view last_name) {
  return absl::WebSafeBase64Escape(last_name);
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view token) {
  std::string name;
  if (!absl::WebSafeBase64Unescape(token, &name) ||
      !ValidateDatasetName(name, "page_token").ok()) {
    return absl::InvalidArgumentError(
        "page_token is not a next_page_token this service returned");
  }
  return name;
}

// Request bytes to a message; INVALID_ARGUMENT naming the type if they are
// not one.
template <typename Message>
absl::Status Decode(const grpc::ByteBuffer* bytes, Message* message) {
  grpc::ByteBuffer copy(*bytes);  // shares the slices; no data is copied
  grpc::ProtoBufferReader reader(&copy);
  if (!message->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", message->GetTypeName(), " message"));
  }
  return absl::OkStatus();
}

template <typename Message>
void Encode(const Message& message, grpc::ByteBuffer* bytes) {
  bool own_buffer;
  (void)grpc::SerializationTraits<Message>::Serialize(message, bytes,
                                                      &own_buffer);
}

// A response and its gradient's bytes, detached from the message.
struct ComputeLossReply {
  v1::ComputeLossResponse message;
  DetachedGradient gradient;
};

// The message, then `gradient { data: <bytes> }` as a slice that owns the
// detached buffer.
void Encode(ComputeLossReply& reply, grpc::ByteBuffer* bytes) {
  DetachedGradient& gradient = reply.gradient;
  if (gradient.data() == nullptr) {
    Encode(reply.message, bytes);
    return;
  }
  const size_t size = gradient.size();
  grpc::Slice slices[2] = {grpc::Slice(reply.message.SerializeAsString() +
                                       DetachedGradientPrefix(size)),
                           grpc::Slice(gradient.Release(), size, std::free)};
  *bytes = grpc::ByteBuffer(slices, 2);
}

}  // namespace

grpc::Status FinishStatus(absl::string_view method, const absl::Status& s) {
  if (s.ok()) {
    spdlog::debug("{} OK", std::string(method));
    return grpc::Status::OK;
  }
  spdlog::warn("{} failed: {}: {}", std::string(method),
               absl::StatusCodeToString(s.code()), std::string(s.message()));
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

LossServiceImpl::LossServiceImpl(DatasetRegistry* registry, RunRegistry* runs,
                                 ThreadPool* compute_pool, ThreadPool* io_pool,
                                 LossServiceOptions options)
    : registry_(registry),
      runs_(runs),
      compute_pool_(compute_pool),
      io_pool_(io_pool),
      options_(std::move(options)) {}

absl::Status LossServiceImpl::Admit(const grpc::CallbackServerContext& context,
                                    absl::string_view method) const {
  const TokenAuthorizer* auth = options_.authorizer;
  if (auth == nullptr || !auth->enabled()) return absl::OkStatus();
  return auth->Check(AccessFor(method), context);
}

// One unary call: admit, decode, run `handler(context, &request, &response,
// done)`, encode, finish. The call's state lives until `done` runs.
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* LossServiceImpl::ServeUnary(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* in,
    grpc::ByteBuffer* out, absl::string_view method, Handler&& handler) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = Admit(*context, method); !s.ok()) {
    reactor->Finish(FinishStatus(method, s));  // logs the code, not the token
    return reactor;
  }
  struct Call {
    Request request;
    Response response;
  };
  // A call cancelled before it was delivered (e.g. its deadline passed while
  // the server was busy) may carry no request at all: do not run it.
  if (context->IsCancelled()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                                 "the call was cancelled before it started"));
    return reactor;
  }
  auto call = std::make_unique<Call>();
  if (absl::Status s = Decode(in, &call->request); !s.ok()) {
    reactor->Finish(FinishStatus(method, s));
    return reactor;
  }
  Call* raw = call.get();
  handler(context, &raw->request, &raw->response,
          Done([reactor, out, method,
                call = std::move(call)](const absl::Status& s) {
            if (s.ok()) Encode(call->response, out);
            reactor->Finish(FinishStatus(method, s));
          }));
  return reactor;
}

grpc::ServerUnaryReactor* LossServiceImpl::PutDataset(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::PutDatasetRequest, v1::Dataset>(
      context, request, response, "PutDataset",
      [this](auto... args) { HandlePutDataset(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::GetDataset(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::GetDatasetRequest, v1::Dataset>(
      context, request, response, "GetDataset",
      [this](auto... args) { HandleGetDataset(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::ListDatasets(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::ListDatasetsRequest, v1::ListDatasetsResponse>(
      context, request, response, "ListDatasets",
      [this](auto... args) { HandleListDatasets(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::DeleteDataset(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::DeleteDatasetRequest, v1::DeleteDatasetResponse>(
      context, request, response, "DeleteDataset",
      [this](auto... args) { HandleDeleteDataset(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::AddClassCounts(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::AddClassCountsRequest, v1::Dataset>(
      context, request, response, "AddClassCounts",
      [this](auto... args) { HandleAddClassCounts(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::GetClassWeights(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::GetClassWeightsRequest, v1::ClassWeights>(
      context, request, response, "GetClassWeights",
      [this](auto... args) { HandleGetClassWeights(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::CreateRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::CreateRunRequest, v1::Run>(
      context, request, response, "CreateRun",
      [this](auto... args) { HandleCreateRun(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::GetRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::GetRunRequest, v1::Run>(
      context, request, response, "GetRun",
      [this](auto... args) { HandleGetRun(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::ListRuns(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::ListRunsRequest, v1::ListRunsResponse>(
      context, request, response, "ListRuns",
      [this](auto... args) { HandleListRuns(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::DeleteRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::DeleteRunRequest, v1::DeleteRunResponse>(
      context, request, response, "DeleteRun",
      [this](auto... args) { HandleDeleteRun(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::RegisterSharedMemory(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::RegisterSharedMemoryRequest, v1::SharedMemoryRegion>(
      context, request, response, "RegisterSharedMemory",
      [this](auto... args) { HandleRegisterSharedMemory(std::move(args)...); });
}

grpc::ServerUnaryReactor* LossServiceImpl::UnregisterSharedMemory(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::UnregisterSharedMemoryRequest,
                    v1::UnregisterSharedMemoryResponse>(
      context, request, response, "UnregisterSharedMemory",
      [this](auto... args) {
        HandleUnregisterSharedMemory(std::move(args)...);
      });
}

grpc::ServerUnaryReactor* LossServiceImpl::ListSharedMemory(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::ListSharedMemoryRequest, v1::ListSharedMemoryResponse>(
      context, request, response, "ListSharedMemory",
      [this](auto... args) { HandleListSharedMemory(std::move(args)...); });
}

// Like ServeUnary, but a bytes gradient is computed into a buffer of its own
// that becomes the last slice of the response: written once, never copied
// (docs/PERFORMANCE.md).
grpc::ServerUnaryReactor* LossServiceImpl::ComputeLoss(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return ServeUnary<v1::ComputeLossRequest, ComputeLossReply>(
      context, request, response, "ComputeLoss",
      [this](grpc::CallbackServerContext* c, const v1::ComputeLossRequest* in,
             ComputeLossReply* reply, Done done) {
        HandleComputeLoss(c, in, &reply->message, std::move(done),
                          &reply->gradient);
      });
}

void LossServiceImpl::HandlePutDataset(grpc::CallbackServerContext* /*context*/,
                                       const v1::PutDatasetRequest* request,
                                       v1::Dataset* response, Done done) {
  io_pool_->Schedule([this, request, response,
                      done = std::move(done)]() mutable {
    absl::StatusOr<v1::Dataset> stored = registry_->Put(
        request->dataset(),
        Expected(request->has_expected_version(), request->expected_version()));
    if (stored.ok()) *response = std::move(*stored);
    std::move(done)(stored.status());
  });
}

void LossServiceImpl::HandleGetDataset(grpc::CallbackServerContext* /*context*/,
                                       const v1::GetDatasetRequest* request,
                                       v1::Dataset* response, Done done) {
  absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
      registry_->Lookup(request->name(), "name");
  if (d.ok()) *response = **d;
  std::move(done)(d.status());
}

void LossServiceImpl::HandleListDatasets(
    grpc::CallbackServerContext* /*context*/,
    const v1::ListDatasetsRequest* request, v1::ListDatasetsResponse* response,
    Done done) {
  auto list = [&]() -> absl::Status {
    if (request->page_size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_size = ", request->page_size(), " is negative"));
    }
    int page_size = request->page_size() == 0 ? options_.default_page_size
                                              : request->page_size();
    page_size = std::min(page_size, options_.max_page_size);
    std::string after;
    if (!request->page_token().empty()) {
      absl::StatusOr<std::string> name = DecodePageToken(request->page_token());
      if (!name.ok()) return name.status();
      after = *std::move(name);
    }
    // A shared store's datasets cannot be listed while it is unreachable.
    CBLOSS_RETURN_IF_ERROR(registry_->Available());
    // One more than asked tells whether another page follows.
    auto page = registry_->List(after, page_size + 1);
    const bool more = static_cast<int>(page.size()) > page_size;
    if (more) page.pop_back();
    for (const auto& d : page) *response->add_datasets() = *d;
    if (more)
      response->set_next_page_token(EncodePageToken(page.back()->name()));
    return absl::OkStatus();
  };
  std::move(done)(list());
}

void LossServiceImpl::HandleDeleteDataset(
    grpc::CallbackServerContext* /*context*/,
    const v1::DeleteDatasetRequest* request,
    v1::DeleteDatasetResponse* /*response*/, Done done) {
  io_pool_->Schedule([this, request, done = std::move(done)]() mutable {
    std::move(done)(registry_->Delete(request->name(),
                                      Expected(request->has_expected_version(),
                                               request->expected_version())));
  });
}

void LossServiceImpl::HandleAddClassCounts(
    grpc::CallbackServerContext* /*context*/,
    const v1::AddClassCountsRequest* request, v1::Dataset* response,
    Done done) {
  io_pool_->Schedule(
      [this, request, response, done = std::move(done)]() mutable {
        absl::StatusOr<v1::Dataset> stored = registry_->AddClassCounts(
            request->name(), request->deltas(), request->labels());
        if (stored.ok()) *response = std::move(*stored);
        std::move(done)(stored.status());
      });
}

void LossServiceImpl::HandleGetClassWeights(
    grpc::CallbackServerContext* /*context*/,
    const v1::GetClassWeightsRequest* request, v1::ClassWeights* response,
    Done done) {
  if (request->source_case() == v1::GetClassWeightsRequest::kDataset) {
    absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
        registry_->Lookup(request->dataset(), "dataset");
    std::move(done)(d.ok() ? ClassWeightsFor(*request, d->get(), response)
                           : d.status());
    return;
  }
  std::move(done)(ClassWeightsFor(*request, nullptr, response));
}

namespace {

absl::Status NoRuns() {
  return absl::UnimplementedError("this service has no runs");
}

}  // namespace

void LossServiceImpl::HandleCreateRun(grpc::CallbackServerContext* /*context*/,
                                      const v1::CreateRunRequest* request,
                                      v1::Run* response, Done done) {
  if (runs_ == nullptr) return std::move(done)(NoRuns());
  io_pool_->Schedule(
      [this, request, response, done = std::move(done)]() mutable {
        absl::StatusOr<v1::Run> stored = runs_->Create(request->run());
        if (stored.ok()) *response = std::move(*stored);
        std::move(done)(stored.status());
      });
}

void LossServiceImpl::HandleGetRun(grpc::CallbackServerContext* /*context*/,
                                   const v1::GetRunRequest* request,
                                   v1::Run* response, Done done) {
  if (runs_ == nullptr) return std::move(done)(NoRuns());
  absl::StatusOr<v1::Run> run = runs_->Get(request->name(), "name");
  if (run.ok()) *response = std::move(*run);
  std::move(done)(run.status());
}

void LossServiceImpl::HandleListRuns(grpc::CallbackServerContext* /*context*/,
                                     const v1::ListRunsRequest* request,
                                     v1::ListRunsResponse* response,
                                     Done done) {
  if (runs_ == nullptr) return std::move(done)(NoRuns());
  auto list = [&]() -> absl::Status {
    if (request->page_size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_size = ", request->page_size(), " is negative"));
    }
    if (!request->dataset().empty()) {
      CBLOSS_RETURN_IF_ERROR(
          ValidateDatasetName(request->dataset(), "dataset"));
    }
    int page_size = request->page_size() == 0 ? options_.default_page_size
                                              : request->page_size();
    page_size = std::min(page_size, options_.max_page_size);
    std::string after;
    if (!request->page_token().empty()) {
      absl::StatusOr<std::string> name = DecodePageToken(request->page_token());
      if (!name.ok()) return name.status();
      after = *std::move(name);
    }
    // One more than asked tells whether another page follows.
    std::vector<v1::Run> page =
        runs_->List(after, page_size + 1, request->dataset());
    const bool more = static_cast<int>(page.size()) > page_size;
    if (more) page.pop_back();
    for (v1::Run& r : page) *response->add_runs() = std::move(r);
    if (more) {
      response->set_next_page_token(
          EncodePageToken(response->runs(page_size - 1).name()));
    }
    return absl::OkStatus();
  };
  std::move(done)(list());
}

void LossServiceImpl::HandleDeleteRun(grpc::CallbackServerContext* /*context*/,
                                      const v1::DeleteRunRequest* request,
                                      v1::DeleteRunResponse* /*response*/,
                                      Done done) {
  if (runs_ == nullptr) return std::move(done)(NoRuns());
  io_pool_->Schedule([this, request, done = std::move(done)]() mutable {
    std::move(done)(
        runs_->Delete(request->name(), Expected(request->has_expected_version(),
                                                request->expected_version())));
  });
}

namespace {

bool UsesSharedMemory(const v1::ComputeLossRequest& request) {
  return request.logits().has_shm() || request.targets().has_shm() ||
         request.has_gradient_shm();
}

}  // namespace

PeerIdentity LossServiceImpl::PeerOf(
    const grpc::CallbackServerContext& context) const {
  if (!options_.identify_peer) return PeerIdentity();
  return options_.identify_peer(context.peer());
}

// Registration maps the object (a few system calls, no copy): it runs on
// the calling gRPC thread.
void LossServiceImpl::HandleRegisterSharedMemory(
    grpc::CallbackServerContext* context,
    const v1::RegisterSharedMemoryRequest* request,
    v1::SharedMemoryRegion* response, Done done) {
  SharedMemoryRegistry* shm = options_.shared_memory;
  if (shm == nullptr) return std::move(done)(SharedMemoryOffError());
  absl::StatusOr<v1::SharedMemoryRegion> region =
      shm->Register(PeerOf(*context), *request);
  if (!region.ok()) return std::move(done)(region.status());
  *response = *std::move(region);
  std::move(done)(absl::OkStatus());
}

void LossServiceImpl::HandleUnregisterSharedMemory(
    grpc::CallbackServerContext* context,
    const v1::UnregisterSharedMemoryRequest* request,
    v1::UnregisterSharedMemoryResponse* /*response*/, Done done) {
  SharedMemoryRegistry* shm = options_.shared_memory;
  if (shm == nullptr) return std::move(done)(SharedMemoryOffError());
  std::move(done)(shm->Unregister(PeerOf(*context), request->name()));
}

void LossServiceImpl::HandleListSharedMemory(
    grpc::CallbackServerContext* context,
    const v1::ListSharedMemoryRequest* /*request*/,
    v1::ListSharedMemoryResponse* response, Done done) {
  SharedMemoryRegistry* shm = options_.shared_memory;
  if (shm == nullptr) return std::move(done)(SharedMemoryOffError());
  absl::StatusOr<std::vector<v1::SharedMemoryRegion>> regions =
      shm->List(PeerOf(*context));
  if (regions.ok()) {
    for (v1::SharedMemoryRegion& r : *regions) {
      *response->add_regions() = std::move(r);
    }
  }
  std::move(done)(regions.status());
}

absl::Status LossServiceImpl::Compute(grpc::CallbackServerContext* context,
                                      const v1::ComputeLossRequest& request,
                                      v1::ComputeLossResponse* response,
                                      DetachedGradient* detached) {
  // The caller's regions, for a request that references any (null when
  // shared memory is off: such a request is then FAILED_PRECONDITION). The
  // spans resolved from it keep their mappings until the call ends.
  std::unique_ptr<SharedMemoryView> shm;
  if (options_.shared_memory != nullptr && UsesSharedMemory(request)) {
    shm = options_.shared_memory->ViewFor(PeerOf(*context));
  }
  absl::StatusOr<Computation> computation =
      ResolveComputation(request, *registry_, runs_, shm.get());
  if (!computation.ok()) return computation.status();
  ComputeOptions options;
  options.pool = compute_pool_;
  options.should_stop = [context] {
    return context->IsCancelled() || DeadlinePassed(context);
  };
  RunUpdate update;
  absl::Status s =
      RunComputation(*computation, options, response, detached, &update);
  if (s.code() == absl::StatusCode::kCancelled && DeadlinePassed(context)) {
    return absl::DeadlineExceededError(
        "the deadline passed while the batch was being computed");
  }
  if (!s.ok() || !computation->accumulate) return s;
  // LOSS.md section 11: only a computation that succeeded changes the run.
  absl::StatusOr<uint64_t> version =
      runs_->Accumulate(update, context->deadline());
  if (!version.ok()) return version.status();
  response->set_run_version(*version);
  return absl::OkStatus();
}

void LossServiceImpl::HandleComputeLoss(grpc::CallbackServerContext* context,
                                        const v1::ComputeLossRequest* request,
                                        v1::ComputeLossResponse* response,
                                        Done done, DetachedGradient* detached,
                                        bool admitted) {
  if (request->accumulate() && !admitted) {
    // Changes a run: a token whenever tokens are configured (server/auth.h).
    const TokenAuthorizer* auth = options_.authorizer;
    if (auth != nullptr && auth->enabled()) {
      absl::Status s =
          auth->Check(TokenAuthorizer::Access::kAccumulate, *context);
      if (!s.ok()) return std::move(done)(s);
    }
  }
  const int64_t elements = ClaimedElements(*request);
  if (elements > options_.max_request_elements) {
    std::move(done)(absl::ResourceExhaustedError(absl::StrCat(
        "logits has ", elements, " elements; this server takes at most ",
        options_.max_request_elements,
        " per request (--max_request_elements): split the batch")));
    return;
  }
  // Admission: a bounded number of computations at once, so a burst gets
  // RESOURCE_EXHAUSTED instead of queueing without limit.
  if (computations_.fetch_add(1) >= options_.max_concurrent_computations) {
    computations_.fetch_sub(1);
    std::move(done)(absl::ResourceExhaustedError(absl::StrCat(
        "the server is computing ", options_.max_concurrent_computations,
        " requests already (--max_concurrent_computations); retry later")));
    return;
  }
  Done release = [this, elements,
                  done = std::move(done)](absl::Status s) mutable {
    computations_.fetch_sub(1);
    if (s.ok() && options_.elements_computed) {
      options_.elements_computed->fetch_add(elements);
    }
    std::move(done)(std::move(s));
  };
  if (elements >= 0 && elements <= options_.inline_elements) {
    std::move(release)(Compute(context, *request, response, detached));
    return;
  }
  compute_pool_->Schedule([this, context, request, response, detached,
                           release = std::move(release)]() mutable {
    std::move(release)(Compute(context, *request, response, detached));
  });
}

namespace {

// StreamLoss: read one request, compute it, write its response, repeat; so
// responses come in request order. A failed or undecodable request is
// answered in-band (error_code, error_message) and the stream goes on.
// A StreamLoss call refused before it starts.
class RefusedStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

class StreamLossReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamLossReactor(LossServiceImpl* service,
                    grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call ended)
      Finish(FinishStatus("StreamLoss", absl::OkStatus()));
      return;
    }
    request_.Clear();
    response_.Clear();
    absl::Status decoded = Decode(&in_, &request_);
    if (!decoded.ok()) {
      Respond(decoded);
      return;
    }
    service_->HandleComputeLoss(context_, &request_, &response_,
                                [this](const absl::Status& s) { Respond(s); });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                          "the stream was closed before a response was sent"));
      return;
    }
    StartRead(&in_);
  }

  void OnDone() override { delete this; }

 private:
  void Respond(const absl::Status& s) {
    if (!s.ok()) {
      FinishStatus("StreamLoss request", s);
      response_.Clear();
      response_.set_error_code(static_cast<int>(s.code()));
      response_.set_error_message(std::string(s.message()));
    }
    out_.Clear();
    Encode(response_, &out_);
    StartWrite(&out_);
  }

  LossServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  grpc::ByteBuffer in_, out_;
  v1::ComputeLossRequest request_;
  v1::ComputeLossResponse response_;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
LossServiceImpl::StreamLoss(grpc::CallbackServerContext* context) {
  if (absl::Status s = Admit(*context, "StreamLoss"); !s.ok()) {
    return new RefusedStream(FinishStatus("StreamLoss", s));
  }
  return new StreamLossReactor(this, context);
}

}  // namespace cbloss::server
