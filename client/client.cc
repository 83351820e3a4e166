// Copyright 2026 The cbloss Authors.

#include "cbloss/client.h"

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "grpc_status.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "service_config.h"

namespace cbloss::client {
namespace {

// The channel's credentials: the caller's, else TLS from the PEM fields (the
// server-name override goes into `args`), else plaintext.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeCredentials(
    const ClientOptions& options, grpc::ChannelArguments* args) {
  if (options.credentials != nullptr) return options.credentials;
  if (!options.tls) return grpc::InsecureChannelCredentials();
  if (options.tls_client_cert_pem.empty() !=
      options.tls_client_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate and its key come together");
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.tls_root_certs_pem;
  ssl.pem_cert_chain = options.tls_client_cert_pem;
  ssl.pem_private_key = options.tls_client_key_pem;
  if (!options.tls_server_name.empty()) {
    args->SetSslTargetNameOverride(options.tls_server_name);
  }
  return grpc::SslCredentials(ssl);
}

// The channel's arguments; with `retries` false, those of the channel of
// accumulating calls: no retry policy, and gRPC's retries (transparent ones
// included) off.
grpc::ChannelArguments MakeChannelArguments(const ClientOptions& options,
                                            bool retries) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_mb * 1024 * 1024);
  args.SetMaxSendMessageSize(options.max_message_mb * 1024 * 1024);
  if (retries) {
    args.SetServiceConfigJSON(ServiceConfigJson(options));
  } else {
    ClientOptions no_retry = options;
    no_retry.retry_unavailable = false;
    args.SetServiceConfigJSON(ServiceConfigJson(no_retry));
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  }
  // Larger TCP reads: a 16 MiB tensor arrives in fewer, larger slices
  // (docs/PERFORMANCE.md, "gRPC and allocator tuning").
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 16 << 20);
  return args;
}

absl::Status CheckToken(const std::string& token) {
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "the token holds whitespace or non-printable characters");
    }
  }
  return absl::OkStatus();
}

// OK if a grpc.health.v1.HealthCheckResponse's bytes say SERVING: field 1
// (tag 0x08) is the status, SERVING = 1.
absl::Status ServingStatus(const grpc::ByteBuffer& response) {
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) {
    return absl::InternalError("unreadable health response");
  }
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.size() == 2 && bytes[0] == 0x08 && bytes[1] == 0x01) {
    return absl::OkStatus();
  }
  return absl::UnavailableError("the server is not SERVING");
}

void SetSource(const LossSource& source, v1::GetClassWeightsRequest* request) {
  if (!source.dataset.empty()) {
    request->set_dataset(source.dataset);
  } else {
    request->mutable_class_counts()->mutable_counts()->Assign(
        source.counts.begin(), source.counts.end());
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Client

class Client::Impl {
 public:
  // `no_retry_args`: the arguments of the channel of accumulating calls,
  // made from `target` and `credentials` on first use.
  Impl(std::shared_ptr<grpc::Channel> channel, ClientOptions options,
       std::string target,
       std::shared_ptr<grpc::ChannelCredentials> credentials,
       const grpc::ChannelArguments& no_retry_args)
      : options_(std::move(options)),
        channel_(std::move(channel)),
        stub_(v1::LossService::NewStub(channel_)),
        target_(std::move(target)),
        credentials_(std::move(credentials)),
        no_retry_args_(no_retry_args) {}

  const ClientOptions& options() const { return options_; }
  const std::shared_ptr<grpc::Channel>& shared_channel() const {
    return channel_;
  }
  v1::LossService::Stub* stub() const { return stub_.get(); }

  // The channel of calls that must not be retried, and its stub.
  const std::shared_ptr<grpc::Channel>& no_retry_channel() const {
    std::call_once(no_retry_once_, [this] {
      no_retry_channel_ =
          grpc::CreateCustomChannel(target_, credentials_, no_retry_args_);
      no_retry_stub_ = v1::LossService::NewStub(no_retry_channel_);
    });
    return no_retry_channel_;
  }
  v1::LossService::Stub* no_retry_stub() const {
    (void)no_retry_channel();
    return no_retry_stub_.get();
  }

  // A unary call's context: its deadline and the call metadata.
  void PrepareContext(grpc::ClientContext* context,
                      absl::optional<absl::Duration> deadline) const {
    context->set_deadline(absl::ToChronoTime(
        absl::Now() + deadline.value_or(options_.default_deadline)));
    AddCallMetadata(context);
  }

  // The metadata every call carries (the bearer token).
  void AddCallMetadata(grpc::ClientContext* context) const {
    if (!options_.token.empty()) {
      context->AddMetadata("authorization", "Bearer " + options_.token);
    }
  }

  // One unary call of `method` with the default deadline.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(
      grpc::Status (v1::LossService::Stub::*method)(grpc::ClientContext*,
                                                    const Request&, Response*),
      const Request& request) const {
    grpc::ClientContext context;
    PrepareContext(&context, absl::nullopt);
    Response response;
    absl::Status s =
        FromGrpc((stub_.get()->*method)(&context, request, &response));
    if (!s.ok()) return s;
    return response;
  }

 private:
  const ClientOptions options_;
  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::LossService::Stub> stub_;

  const std::string target_;
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  const grpc::ChannelArguments no_retry_args_;
  // Set once, by no_retry_channel().
  mutable std::once_flag no_retry_once_;
  mutable std::shared_ptr<grpc::Channel> no_retry_channel_;
  mutable std::unique_ptr<v1::LossService::Stub> no_retry_stub_;
};

absl::StatusOr<std::unique_ptr<Client>> Client::Create(
    const std::string& target, ClientOptions options) {
  if (target.empty()) {
    return absl::InvalidArgumentError("the target address is empty");
  }
  if (options.max_message_mb < 1 || options.max_message_mb > 2047) {
    return absl::InvalidArgumentError("max_message_mb must be in [1, 2047]");
  }
  grpc::ChannelArguments args = MakeChannelArguments(options, true);
  grpc::ChannelArguments no_retry_args = MakeChannelArguments(options, false);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeCredentials(options, &args);
  if (!credentials.ok()) return credentials.status();
  (void)MakeCredentials(options, &no_retry_args);  // the name override
  if (absl::Status s = CheckToken(options.token); !s.ok()) return s;
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, *credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create a channel to '", target, "'"));
  }
  return std::unique_ptr<Client>(new Client(std::make_unique<Impl>(
      std::move(channel), std::move(options), target, *std::move(credentials),
      std::move(no_retry_args))));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() = default;

const ClientOptions& Client::options() const { return impl_->options(); }

absl::StatusOr<v1::Dataset> Client::PutDataset(
    const v1::Dataset& dataset, absl::optional<uint64_t> expected_version) {
  v1::PutDatasetRequest request;
  *request.mutable_dataset() = dataset;
  if (expected_version) request.set_expected_version(*expected_version);
  return impl_->Call(&v1::LossService::Stub::PutDataset, request);
}

absl::StatusOr<v1::Dataset> Client::GetDataset(const std::string& name) {
  v1::GetDatasetRequest request;
  request.set_name(name);
  return impl_->Call(&v1::LossService::Stub::GetDataset, request);
}

absl::StatusOr<std::vector<v1::Dataset>> Client::ListDatasets() {
  std::vector<v1::Dataset> all;
  v1::ListDatasetsRequest request;
  do {
    absl::StatusOr<v1::ListDatasetsResponse> page =
        impl_->Call(&v1::LossService::Stub::ListDatasets, request);
    if (!page.ok()) return page.status();
    for (v1::Dataset& d : *page->mutable_datasets())
      all.push_back(std::move(d));
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  return all;
}

absl::Status Client::DeleteDataset(const std::string& name,
                                   absl::optional<uint64_t> expected_version) {
  v1::DeleteDatasetRequest request;
  request.set_name(name);
  if (expected_version) request.set_expected_version(*expected_version);
  return impl_->Call(&v1::LossService::Stub::DeleteDataset, request).status();
}

absl::StatusOr<v1::Dataset> Client::AddClassCounts(
    const std::string& name, absl::Span<const int64_t> deltas,
    absl::Span<const int32_t> labels) {
  v1::AddClassCountsRequest request;
  request.set_name(name);
  request.mutable_deltas()->Assign(deltas.begin(), deltas.end());
  request.mutable_labels()->Assign(labels.begin(), labels.end());
  return impl_->Call(&v1::LossService::Stub::AddClassCounts, request);
}

absl::StatusOr<v1::ClassWeights> Client::GetClassWeights(
    const LossSource& source, const v1::LossConfig& config) {
  v1::GetClassWeightsRequest request;
  SetSource(source, &request);
  *request.mutable_config() = config;
  return impl_->Call(&v1::LossService::Stub::GetClassWeights, request);
}

absl::StatusOr<LossResult> Client::ComputeLoss(const LossSource& source,
                                               const Logits& logits,
                                               const Target& target,
                                               const LossOptions& options) {
  absl::StatusOr<v1::ComputeLossRequest> request =
      MakeComputeLossRequest(source, logits, target, options);
  if (!request.ok()) return request.status();
  grpc::ClientContext context;
  impl_->PrepareContext(&context, options.deadline);
  v1::ComputeLossResponse response;
  v1::LossService::Stub* stub =
      options.accumulate ? impl_->no_retry_stub() : impl_->stub();
  absl::Status s = FromGrpc(stub->ComputeLoss(&context, *request, &response));
  if (!s.ok()) return s;
  return ReadComputeLossResponse(response, options);
}

absl::StatusOr<v1::Run> Client::CreateRun(const v1::Run& run) {
  v1::CreateRunRequest request;
  *request.mutable_run() = run;
  return impl_->Call(&v1::LossService::Stub::CreateRun, request);
}

absl::StatusOr<v1::Run> Client::GetRun(const std::string& name) {
  v1::GetRunRequest request;
  request.set_name(name);
  return impl_->Call(&v1::LossService::Stub::GetRun, request);
}

absl::StatusOr<std::vector<v1::Run>> Client::ListRuns(
    const std::string& dataset) {
  std::vector<v1::Run> all;
  v1::ListRunsRequest request;
  request.set_dataset(dataset);
  do {
    absl::StatusOr<v1::ListRunsResponse> page = ListRunsPage(request);
    if (!page.ok()) return page.status();
    for (v1::Run& r : *page->mutable_runs()) all.push_back(std::move(r));
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  return all;
}

absl::StatusOr<v1::ListRunsResponse> Client::ListRunsPage(
    const v1::ListRunsRequest& request) {
  return impl_->Call(&v1::LossService::Stub::ListRuns, request);
}

absl::Status Client::DeleteRun(const std::string& name,
                               absl::optional<uint64_t> expected_version) {
  v1::DeleteRunRequest request;
  request.set_name(name);
  if (expected_version) request.set_expected_version(*expected_version);
  return impl_->Call(&v1::LossService::Stub::DeleteRun, request).status();
}

absl::StatusOr<v1::SharedMemoryRegion> Client::RegisterSharedMemory(
    const std::string& name, const std::string& key, uint64_t offset,
    uint64_t byte_size) {
  v1::RegisterSharedMemoryRequest request;
  request.set_name(name);
  request.set_key(key);
  request.set_offset(offset);
  request.set_byte_size(byte_size);
  return impl_->Call(&v1::LossService::Stub::RegisterSharedMemory, request);
}

absl::Status Client::UnregisterSharedMemory(const std::string& name) {
  v1::UnregisterSharedMemoryRequest request;
  request.set_name(name);
  return impl_->Call(&v1::LossService::Stub::UnregisterSharedMemory, request)
      .status();
}

absl::StatusOr<std::vector<v1::SharedMemoryRegion>> Client::ListSharedMemory() {
  absl::StatusOr<v1::ListSharedMemoryResponse> response = impl_->Call(
      &v1::LossService::Stub::ListSharedMemory, v1::ListSharedMemoryRequest());
  if (!response.ok()) return response.status();
  return std::vector<v1::SharedMemoryRegion>(response->regions().begin(),
                                             response->regions().end());
}

absl::Status Client::CheckHealth() {
  // grpc.health.v1.Health/Check with service "" (an empty request message).
  grpc::GenericStub generic(impl_->shared_channel());
  grpc::ClientContext context;
  impl_->PrepareContext(&context, absl::nullopt);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1), response;
  // std::promise rather than absl::Notification: ThreadSanitizer sees it.
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", {}, &request,
                    &response,
                    [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) return FromGrpc(status);
  return ServingStatus(response);
}

// ---------------------------------------------------------------------------
// LossStream

class LossStream::Impl {
 public:
  // The call lives as long as the training job: no deadline of its own; each
  // Compute is watched instead. It goes on the no-retry channel: any of its
  // requests may accumulate.
  explicit Impl(const Client::Impl& client)
      : default_deadline_(client.options().default_deadline),
        channel_(client.no_retry_channel()) {
    client.AddCallMetadata(&context_);
    stream_ = client.no_retry_stub()->StreamLoss(&context_);
    watchdog_ = std::thread([this] { Watch(); });
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    changed_.notify_all();
    watchdog_.join();
    if (!closed_) {
      context_.TryCancel();
      (void)stream_->Finish();
    }
  }

  absl::StatusOr<LossResult> Compute(const LossSource& source,
                                     const Logits& logits, const Target& target,
                                     const LossOptions& options);

  absl::Status Close() {
    if (closed_) return absl::OkStatus();
    closed_ = true;
    stream_->WritesDone();
    return FromGrpc(stream_->Finish());
  }

 private:
  void Watch();
  // Arms the watchdog for the next Compute.
  void StartWatching(absl::Duration deadline);
  // Disarms it; true if it fired (the stream is cancelled).
  bool StopWatching();

  const absl::Duration default_deadline_;
  // The call's channel, held so that the stream may outlive its Client.
  const std::shared_ptr<grpc::Channel> channel_;
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
};

void LossStream::Impl::Watch() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (!deadline_.has_value()) {
      changed_.wait(lock,
                    [this] { return stopping_ || deadline_.has_value(); });
      continue;
    }
    const uint64_t call = call_;
    const absl::Time deadline = *deadline_;
    // Wakes early when the call completes (or another starts) or on stop.
    const bool changed = changed_.wait_until(
        lock, absl::ToChronoTime(deadline),
        [&] { return stopping_ || !deadline_.has_value() || call_ != call; });
    if (!changed) {
      timed_out_ = true;
      deadline_.reset();
      context_.TryCancel();
    }
  }
}

void LossStream::Impl::StartWatching(absl::Duration deadline) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++call_;
    timed_out_ = false;
    deadline_ = absl::Now() + deadline;
  }
  changed_.notify_all();
}

bool LossStream::Impl::StopWatching() {
  bool timed_out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    deadline_.reset();
    timed_out = timed_out_;
  }
  changed_.notify_all();
  return timed_out;
}

absl::StatusOr<LossResult> LossStream::Impl::Compute(
    const LossSource& source, const Logits& logits, const Target& target,
    const LossOptions& options) {
  if (closed_) return absl::FailedPreconditionError("the stream is closed");
  absl::StatusOr<v1::ComputeLossRequest> request =
      MakeComputeLossRequest(source, logits, target, options);
  if (!request.ok()) return request.status();
  StartWatching(options.deadline.value_or(default_deadline_));
  v1::ComputeLossResponse response;
  const bool ok = stream_->Write(*request) && stream_->Read(&response);
  const bool timed_out = StopWatching();
  if (!ok) {
    closed_ = true;
    absl::Status s = FromGrpc(stream_->Finish());
    if (timed_out) {
      return absl::DeadlineExceededError(
          "the stream's response did not come before the deadline; the "
          "stream was cancelled");
    }
    return s.ok() ? absl::UnavailableError("the stream ended") : s;
  }
  // The watchdog may have fired just after the response arrived: the answer
  // is good, but the stream is cancelled from here on.
  if (timed_out) {
    closed_ = true;
    (void)stream_->Finish();
  }
  return ReadComputeLossResponse(response, options);
}

std::unique_ptr<LossStream> Client::OpenLossStream() {
  return std::unique_ptr<LossStream>(
      new LossStream(std::make_unique<LossStream::Impl>(*impl_)));
}

LossStream::LossStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LossStream::~LossStream() = default;

absl::StatusOr<LossResult> LossStream::Compute(const LossSource& source,
                                               const Logits& logits,
                                               const Target& target,
                                               const LossOptions& options) {
  return impl_->Compute(source, logits, target, options);
}

absl::Status LossStream::Close() { return impl_->Close(); }

}  // namespace cbloss::client
