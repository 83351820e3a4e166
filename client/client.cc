// Copyright 2026 The cbloss Authors.

#include "cbloss/client.h"

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/generic/generic_stub.h"

namespace cbloss {
namespace {

constexpr char kServiceName[] = "cbloss.v1.LossService";

// Retries idempotent calls on UNAVAILABLE; writes are never retried here (a
// retried AddClassCounts could count twice).
std::string ServiceConfig(const ClientOptions& options) {
  std::string config = absl::StrCat("{\"loadBalancingConfig\": [{\"",
                                    options.load_balancing_policy, "\": {}}]");
  if (options.retry_unavailable) {
    std::vector<std::string> names;
    for (const char* method :
         {"GetDataset", "ListDatasets", "GetClassWeights", "ComputeLoss"}) {
      names.push_back(absl::StrCat("{\"service\": \"", kServiceName,
                                   "\", \"method\": \"", method, "\"}"));
    }
    absl::StrAppend(
        &config, ", \"methodConfig\": [{\"name\": [",
        absl::StrJoin(names, ", "),
        "], \"retryPolicy\": {\"maxAttempts\": 5, \"initialBackoff\": "
        "\"0.05s\", \"maxBackoff\": \"1s\", \"backoffMultiplier\": 2, "
        "\"retryableStatusCodes\": [\"UNAVAILABLE\"]}}]");
  }
  return config + "}";
}

void SetSource(const LossSource& source, v1::ComputeLossRequest* request) {
  if (!source.dataset.empty()) {
    request->set_dataset(source.dataset);
  } else {
    request->mutable_class_counts()->mutable_counts()->Assign(
        source.counts.begin(), source.counts.end());
  }
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(
    const std::string& target, ClientOptions options) {
  if (target.empty()) {
    return absl::InvalidArgumentError("the target address is empty");
  }
  if (options.max_message_mb < 1 || options.max_message_mb > 2047) {
    return absl::InvalidArgumentError("max_message_mb must be in [1, 2047]");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_mb * 1024 * 1024);
  args.SetMaxSendMessageSize(options.max_message_mb * 1024 * 1024);
  args.SetServiceConfigJSON(ServiceConfig(options));
  // Larger TCP reads: a 16 MiB tensor arrives in fewer, larger slices
  // (docs/PERFORMANCE.md, "gRPC and allocator tuning").
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 16 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials = options.credentials;
  if (credentials == nullptr && options.tls) {
    if (options.tls_client_cert_pem.empty() !=
        options.tls_client_key_pem.empty()) {
      return absl::InvalidArgumentError(
          "a TLS client certificate and its key come together");
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs_pem;
    ssl.pem_cert_chain = options.tls_client_cert_pem;
    ssl.pem_private_key = options.tls_client_key_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  for (char c : options.token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "the token holds whitespace or non-printable characters");
    }
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create a channel to '", target, "'"));
  }
  return std::unique_ptr<Client>(
      new Client(std::move(channel), std::move(options)));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(v1::LossService::NewStub(channel_)) {}

void Client::PrepareContext(grpc::ClientContext* context,
                            absl::optional<absl::Duration> deadline) const {
  context->set_deadline(absl::ToChronoTime(
      absl::Now() + deadline.value_or(options_.default_deadline)));
  AddCallMetadata(context);
}

void Client::AddCallMetadata(grpc::ClientContext* context) const {
  if (!options_.token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.token);
  }
}

namespace {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path,
                                          const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) {
    return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::Status LoadTlsFiles(const std::string& root_ca_path,
                          const std::string& cert_path,
                          const std::string& key_path, ClientOptions* options) {
  if (cert_path.empty() != key_path.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client certificate and its key come together");
  }
  options->tls = true;
  const std::pair<const std::string*, std::string*> files[] = {
      {&root_ca_path, &options->tls_root_certs_pem},
      {&cert_path, &options->tls_client_cert_pem},
      {&key_path, &options->tls_client_key_pem}};
  for (const auto& [path, pem] : files) {
    if (path->empty()) continue;
    absl::StatusOr<std::string> text = ReadWholeFile(*path, "TLS file");
    if (!text.ok()) return text.status();
    *pem = *std::move(text);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadWholeFile(path, "token file");
  if (!text.ok()) return text.status();
  std::string token(absl::StripTrailingAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, " is empty"));
  }
  return token;
}

absl::StatusOr<v1::Dataset> Client::PutDataset(
    const v1::Dataset& dataset, absl::optional<uint64_t> expected_version) {
  v1::PutDatasetRequest request;
  *request.mutable_dataset() = dataset;
  if (expected_version) request.set_expected_version(*expected_version);
  grpc::ClientContext context;
  PrepareContext(&context, absl::nullopt);
  v1::Dataset response;
  absl::Status s = FromGrpc(stub_->PutDataset(&context, request, &response));
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::Dataset> Client::GetDataset(const std::string& name) {
  v1::GetDatasetRequest request;
  request.set_name(name);
  grpc::ClientContext context;
  PrepareContext(&context, absl::nullopt);
  v1::Dataset response;
  absl::Status s = FromGrpc(stub_->GetDataset(&context, request, &response));
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<std::vector<v1::Dataset>> Client::ListDatasets() {
  std::vector<v1::Dataset> all;
  v1::ListDatasetsRequest request;
  do {
    grpc::ClientContext context;
    PrepareContext(&context, absl::nullopt);
    v1::ListDatasetsResponse response;
    absl::Status s =
        FromGrpc(stub_->ListDatasets(&context, request, &response));
    if (!s.ok()) return s;
    for (v1::Dataset& d : *response.mutable_datasets())
      all.push_back(std::move(d));
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return all;
}

absl::Status Client::DeleteDataset(const std::string& name,
                                   absl::optional<uint64_t> expected_version) {
  v1::DeleteDatasetRequest request;
  request.set_name(name);
  if (expected_version) request.set_expected_version(*expected_version);
  grpc::ClientContext context;
  PrepareContext(&context, absl::nullopt);
  v1::DeleteDatasetResponse response;
  return FromGrpc(stub_->DeleteDataset(&context, request, &response));
}

absl::StatusOr<v1::Dataset> Client::AddClassCounts(
    const std::string& name, absl::Span<const int64_t> deltas,
    absl::Span<const int32_t> labels) {
  v1::AddClassCountsRequest request;
  request.set_name(name);
  request.mutable_deltas()->Assign(deltas.begin(), deltas.end());
  request.mutable_labels()->Assign(labels.begin(), labels.end());
  grpc::ClientContext context;
  PrepareContext(&context, absl::nullopt);
  v1::Dataset response;
  absl::Status s =
      FromGrpc(stub_->AddClassCounts(&context, request, &response));
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ClassWeights> Client::GetClassWeights(
    const LossSource& source, const v1::LossConfig& config) {
  v1::GetClassWeightsRequest request;
  if (!source.dataset.empty()) {
    request.set_dataset(source.dataset);
  } else {
    request.mutable_class_counts()->mutable_counts()->Assign(
        source.counts.begin(), source.counts.end());
  }
  *request.mutable_config() = config;
  grpc::ClientContext context;
  PrepareContext(&context, absl::nullopt);
  v1::ClassWeights response;
  absl::Status s =
      FromGrpc(stub_->GetClassWeights(&context, request, &response));
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ComputeLossRequest> MakeComputeLossRequest(
    const LossSource& source, const Logits& logits, const Target& target,
    const LossOptions& options) {
  const bool f32 = logits.dtype == v1::DTYPE_FLOAT32 ||
                   logits.dtype == v1::DTYPE_UNSPECIFIED;
  const size_t elements = f32 ? logits.f32.size() : logits.half.size();
  if (logits.rows < 1 || logits.cols < 1 ||
      elements != static_cast<size_t>(logits.rows * logits.cols)) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits: ", elements, " values do not fill shape [",
                     logits.rows, ", ", logits.cols, "]"));
  }
  v1::ComputeLossRequest request;
  SetSource(source, &request);
  *request.mutable_config() = options.config;
  v1::Tensor* z = request.mutable_logits();
  z->set_dtype(logits.dtype);
  z->add_shape(logits.rows);
  z->add_shape(logits.cols);
  // Raw little-endian bytes: one memcpy, no per-element encoding.
  if (f32) {
    z->set_data(reinterpret_cast<const char*>(logits.f32.data()),
                logits.f32.size() * sizeof(float));
  } else {
    z->set_data(reinterpret_cast<const char*>(logits.half.data()),
                logits.half.size() * sizeof(uint16_t));
  }
  request.mutable_labels()->Assign(target.labels.begin(), target.labels.end());
  if (!target.targets.empty()) {
    v1::Tensor* t = request.mutable_targets();
    t->set_dtype(v1::DTYPE_FLOAT32);
    t->add_shape(logits.rows);
    t->add_shape(logits.cols);
    t->set_data(reinterpret_cast<const char*>(target.targets.data()),
                target.targets.size() * sizeof(float));
  }
  request.mutable_sample_weights()->Assign(options.sample_weights.begin(),
                                           options.sample_weights.end());
  request.mutable_upstream()->Assign(options.upstream.begin(),
                                     options.upstream.end());
  request.set_want_gradient(options.want_gradient);
  request.set_want_per_sample_losses(options.want_per_sample_losses);
  request.set_gradient_dtype(options.gradient_dtype);
  if (options.expected_dataset_version) {
    request.set_expected_dataset_version(*options.expected_dataset_version);
  }
  if (options.epoch) request.set_epoch(*options.epoch);
  return request;
}

absl::StatusOr<LossResult> ReadComputeLossResponse(
    const v1::ComputeLossResponse& response, const LossOptions& options) {
  if (response.error_code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response.error_code()),
                        response.error_message());
  }
  LossResult r;
  r.loss = response.loss();
  r.num_samples = response.num_samples();
  r.dataset_version = response.dataset_version();
  r.per_sample_losses.assign(response.per_sample_losses().begin(),
                             response.per_sample_losses().end());
  r.class_weights.assign(response.class_weights().begin(),
                         response.class_weights().end());
  r.resolved_config = response.resolved_config();
  if (!response.has_gradient()) return r;
  const v1::Tensor& g = response.gradient();
  const bool half =
      g.dtype() == v1::DTYPE_FLOAT16 || g.dtype() == v1::DTYPE_BFLOAT16;
  const size_t width = half ? sizeof(uint16_t) : sizeof(float);
  const size_t n =
      g.float_data_size() > 0 ? g.float_data_size() : g.data().size() / width;
  if (half) {
    r.gradient_half.resize(n);
    std::memcpy(r.gradient_half.data(), g.data().data(), n * width);
    return r;
  }
  float* out = nullptr;
  if (!options.gradient_out.empty()) {
    if (options.gradient_out.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradient_out has ", options.gradient_out.size(),
                       " floats; the gradient has ", n));
    }
    out = options.gradient_out.data();
  } else {
    r.gradient.resize(n);
    out = r.gradient.data();
  }
  if (g.float_data_size() > 0) {
    std::memcpy(out, g.float_data().data(), n * sizeof(float));
  } else {
    std::memcpy(out, g.data().data(), n * sizeof(float));
  }
  return r;
}

absl::StatusOr<LossResult> Client::ComputeLoss(const LossSource& source,
                                               const Logits& logits,
                                               const Target& target,
                                               const LossOptions& options) {
  absl::StatusOr<v1::ComputeLossRequest> request =
      MakeComputeLossRequest(source, logits, target, options);
  if (!request.ok()) return request.status();
  grpc::ClientContext context;
  PrepareContext(&context, options.deadline);
  v1::ComputeLossResponse response;
  absl::Status s = FromGrpc(stub_->ComputeLoss(&context, *request, &response));
  if (!s.ok()) return s;
  return ReadComputeLossResponse(response, options);
}

absl::Status Client::CheckHealth() {
  // grpc.health.v1.Health/Check with service "" (an empty request message);
  // the response's field 1 (tag 0x08) is the status, SERVING = 1.
  grpc::GenericStub generic(channel_);
  grpc::ClientContext context;
  PrepareContext(&context, absl::nullopt);
  grpc::ByteBuffer request, response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  // std::promise rather than absl::Notification: ThreadSanitizer sees it.
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", {}, &request,
                    &response,
                    [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) return FromGrpc(status);
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

std::unique_ptr<LossStream> Client::OpenLossStream() {
  return std::unique_ptr<LossStream>(new LossStream(this));
}

LossStream::LossStream(Client* client)
    : default_deadline_(client->options().default_deadline) {
  // The call lives as long as the training job: no deadline of its own; each
  // Compute is watched instead.
  client->AddCallMetadata(&context_);
  stream_ = client->stub()->StreamLoss(&context_);
  watchdog_ = std::thread([this] { Watch(); });
}

LossStream::~LossStream() {
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

void LossStream::Watch() {
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
    const bool changed =
        changed_.wait_until(lock, absl::ToChronoTime(deadline), [&] {
          return stopping_ || !deadline_.has_value() || call_ != call;
        });
    if (!changed) {
      timed_out_ = true;
      deadline_.reset();
      context_.TryCancel();
    }
  }
}

absl::StatusOr<LossResult> LossStream::Compute(const LossSource& source,
                                               const Logits& logits,
                                               const Target& target,
                                               const LossOptions& options) {
  if (closed_) return absl::FailedPreconditionError("the stream is closed");
  absl::StatusOr<v1::ComputeLossRequest> request =
      MakeComputeLossRequest(source, logits, target, options);
  if (!request.ok()) return request.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++call_;
    timed_out_ = false;
    deadline_ = absl::Now() + options.deadline.value_or(default_deadline_);
  }
  changed_.notify_all();
  v1::ComputeLossResponse response;
  const bool ok = stream_->Write(*request) && stream_->Read(&response);
  bool timed_out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    deadline_.reset();
    timed_out = timed_out_;
  }
  changed_.notify_all();
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

absl::Status LossStream::Close() {
  if (closed_) return absl::OkStatus();
  closed_ = true;
  stream_->WritesDone();
  return FromGrpc(stream_->Finish());
}

}  // namespace cbloss
