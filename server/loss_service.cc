// Copyright 2026 The cbloss Authors.

#include "server/loss_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/compute_request.h"
#include "spdlog/spdlog.h"

namespace cbloss {
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

LossServiceImpl::LossServiceImpl(DatasetRegistry* registry,
                                 ThreadPool* compute_pool, ThreadPool* io_pool,
                                 LossServiceOptions options)
    : registry_(registry),
      compute_pool_(compute_pool),
      io_pool_(io_pool),
      options_(options) {}

grpc::ServerUnaryReactor* LossServiceImpl::PutDataset(
    grpc::CallbackServerContext* context, const v1::PutDatasetRequest* request,
    v1::Dataset* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  io_pool_->Schedule([this, reactor, request, response] {
    absl::StatusOr<v1::Dataset> stored = registry_->Put(
        request->dataset(), Expected(request->has_expected_version(),
                                     request->expected_version()));
    if (stored.ok()) *response = *std::move(stored);
    reactor->Finish(FinishStatus("PutDataset", stored.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* LossServiceImpl::GetDataset(
    grpc::CallbackServerContext* context, const v1::GetDatasetRequest* request,
    v1::Dataset* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
      registry_->Get(request->name());
  if (d.ok()) *response = **d;
  reactor->Finish(FinishStatus("GetDataset", d.status()));
  return reactor;
}

grpc::ServerUnaryReactor* LossServiceImpl::ListDatasets(
    grpc::CallbackServerContext* context,
    const v1::ListDatasetsRequest* request,
    v1::ListDatasetsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto list = [&]() -> absl::Status {
    if (request->page_size() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page_size = ", request->page_size(), " is negative"));
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
    auto page = registry_->List(after, page_size + 1);
    const bool more = static_cast<int>(page.size()) > page_size;
    if (more) page.pop_back();
    for (const auto& d : page) *response->add_datasets() = *d;
    if (more) response->set_next_page_token(EncodePageToken(page.back()->name()));
    return absl::OkStatus();
  };
  reactor->Finish(FinishStatus("ListDatasets", list()));
  return reactor;
}

grpc::ServerUnaryReactor* LossServiceImpl::DeleteDataset(
    grpc::CallbackServerContext* context,
    const v1::DeleteDatasetRequest* request,
    v1::DeleteDatasetResponse* /*response*/) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  io_pool_->Schedule([this, reactor, request] {
    absl::Status s = registry_->Delete(
        request->name(), Expected(request->has_expected_version(),
                                  request->expected_version()));
    reactor->Finish(FinishStatus("DeleteDataset", s));
  });
  return reactor;
}

grpc::ServerUnaryReactor* LossServiceImpl::AddClassCounts(
    grpc::CallbackServerContext* context,
    const v1::AddClassCountsRequest* request, v1::Dataset* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  io_pool_->Schedule([this, reactor, request, response] {
    absl::StatusOr<v1::Dataset> stored = registry_->AddClassCounts(
        request->name(), request->deltas(), request->labels());
    if (stored.ok()) *response = *std::move(stored);
    reactor->Finish(FinishStatus("AddClassCounts", stored.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* LossServiceImpl::GetClassWeights(
    grpc::CallbackServerContext* context,
    const v1::GetClassWeightsRequest* request, v1::ClassWeights* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status s;
  if (request->source_case() == v1::GetClassWeightsRequest::kDataset) {
    absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
        registry_->Get(request->dataset());
    s = d.ok() ? ClassWeightsFor(*request, d->get(), response) : d.status();
  } else {
    s = ClassWeightsFor(*request, nullptr, response);
  }
  reactor->Finish(FinishStatus("GetClassWeights", s));
  return reactor;
}

absl::Status LossServiceImpl::Compute(grpc::CallbackServerContext* context,
                                      const v1::ComputeLossRequest& request,
                                      v1::ComputeLossResponse* response) {
  std::shared_ptr<const v1::Dataset> dataset;
  if (request.source_case() == v1::ComputeLossRequest::kDataset) {
    absl::StatusOr<std::shared_ptr<const v1::Dataset>> d =
        registry_->Get(request.dataset());
    if (!d.ok()) return d.status();
    dataset = *std::move(d);
  }
  auto should_stop = [context] {
    return context->IsCancelled() || DeadlinePassed(context);
  };
  absl::Status s = ComputeLossResponseFor(request, dataset.get(),
                                          compute_pool_, should_stop, response);
  if (s.code() == absl::StatusCode::kCancelled && DeadlinePassed(context)) {
    return absl::DeadlineExceededError(
        "the deadline passed while the batch was being computed");
  }
  return s;
}

void LossServiceImpl::RunCompute(
    grpc::CallbackServerContext* context, const v1::ComputeLossRequest* request,
    v1::ComputeLossResponse* response,
    absl::AnyInvocable<void(absl::Status) &&> done) {
  const int64_t elements = ClaimedElements(*request);
  if (elements >= 0 && elements <= options_.inline_elements) {
    std::move(done)(Compute(context, *request, response));
    return;
  }
  compute_pool_->Schedule(
      [this, context, request, response, done = std::move(done)]() mutable {
        std::move(done)(Compute(context, *request, response));
      });
}

grpc::ServerUnaryReactor* LossServiceImpl::ComputeLoss(
    grpc::CallbackServerContext* context, const v1::ComputeLossRequest* request,
    v1::ComputeLossResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  RunCompute(context, request, response, [reactor](absl::Status s) {
    reactor->Finish(FinishStatus("ComputeLoss", s));
  });
  return reactor;
}

namespace {

// StreamLoss: read one request, compute it, write its response, repeat; so
// responses come in request order. A failed request is answered in-band.
class StreamLossReactor final
    : public grpc::ServerBidiReactor<v1::ComputeLossRequest,
                                     v1::ComputeLossResponse> {
 public:
  StreamLossReactor(LossServiceImpl* service,
                    grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call ended)
      Finish(FinishStatus("StreamLoss", absl::OkStatus()));
      return;
    }
    response_.Clear();
    service_->RunCompute(context_, &request_, &response_,
                         [this](absl::Status s) {
                           if (!s.ok()) {
                             FinishStatus("StreamLoss request", s);
                             response_.Clear();
                             response_.set_error_code(static_cast<int>(s.code()));
                             response_.set_error_message(std::string(s.message()));
                           }
                           StartWrite(&response_);
                         });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                          "the stream was closed before a response was sent"));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  LossServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  v1::ComputeLossRequest request_;
  v1::ComputeLossResponse response_;
};

}  // namespace

grpc::ServerBidiReactor<v1::ComputeLossRequest, v1::ComputeLossResponse>*
LossServiceImpl::StreamLoss(grpc::CallbackServerContext* context) {
  return new StreamLossReactor(this, context);
}

}  // namespace cbloss
