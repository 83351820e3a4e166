// Copyright 2026 The cbloss Authors.
//
// ComputeLoss with gradient through the real cbloss-server (started here on
// 127.0.0.1, port 0, by bench/server_process.h) beside a bare gRPC echo served
// by this process: same method, same request bytes, and a reply of the same
// bytes as the server's response, sent from a prepared buffer. The echo is the
// floor gRPC itself sets on loopback; the difference is decode + validate +
// compute + encode.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench.h"
#include "bench/server_process.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "core/half.h"
#include "grpcpp/grpcpp.h"
#include "server/grpc_tuning.h"

namespace cbloss::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Answers every ComputeLoss with the bytes it was given, without looking at
// the request.
class EchoService final
    : public v1::LossService::WithRawCallbackMethod_ComputeLoss<
          v1::LossService::CallbackService> {
 public:
  void SetResponse(const std::string& bytes) {
    response_ = std::make_shared<grpc::Slice>(bytes);
  }

  grpc::ServerUnaryReactor* ComputeLoss(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* /*request*/,
                                        grpc::ByteBuffer* response) override {
    grpc::Slice slice = *response_;  // a reference, not a copy
    *response = grpc::ByteBuffer(&slice, 1);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  std::shared_ptr<grpc::Slice> response_;
};

// "name=value,..." -> pairs; malformed entries are skipped.
std::vector<std::pair<std::string, int>> ParseArgs(const std::string& text) {
  std::vector<std::pair<std::string, int>> out;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    const size_t eq = item.find('=');
    int value = 0;
    if (eq == absl::string_view::npos ||
        !absl::SimpleAtoi(item.substr(eq + 1), &value)) {
      continue;
    }
    out.emplace_back(std::string(item.substr(0, eq)), value);
  }
  return out;
}

std::shared_ptr<grpc::Channel> Connect(
    int port, const std::vector<std::pair<std::string, int>>& extra) {
  grpc::ChannelArguments args;
  // As client/client.cc sets them (docs/PERFORMANCE.md).
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 16 << 20);
  for (const auto& [name, value] : extra) args.SetInt(name, value);
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Separate connections for the server and the echo, and for each bench
  // phase: no shared subchannel state.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

// `name` ("seesaw") as a wire LossType; false if there is none.
bool ParseLossType(const std::string& name, v1::LossType* type) {
  return v1::LossType_Parse(
      absl::StrCat("LOSS_TYPE_", absl::AsciiStrToUpper(name)), type);
}

v1::ComputeLossRequest MakeRequest(int64_t batch, int64_t classes, bool bf16,
                                   v1::LossType loss_type) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::uniform_int_distribution<int32_t> label(
      0, static_cast<int32_t>(classes - 1));
  v1::ComputeLossRequest request;
  for (int64_t j = 0; j < classes; ++j) {
    request.mutable_class_counts()->add_counts(1 + (j * 37) % 5000);
  }
  v1::Tensor* logits = request.mutable_logits();
  logits->add_shape(batch);
  logits->add_shape(classes);
  const int64_t n = batch * classes;
  std::string* data = logits->mutable_data();
  if (bf16) {
    logits->set_dtype(v1::DTYPE_BFLOAT16);
    data->resize(n * 2);
    for (int64_t k = 0; k < n; ++k) {
      const uint16_t h = FloatToBFloat16(normal(rng));
      std::memcpy(data->data() + 2 * k, &h, 2);
    }
    request.set_gradient_dtype(v1::DTYPE_BFLOAT16);
  } else {
    logits->set_dtype(v1::DTYPE_FLOAT32);
    data->resize(n * 4);
    for (int64_t k = 0; k < n; ++k) {
      const float v = normal(rng);
      std::memcpy(data->data() + 4 * k, &v, 4);
    }
    request.set_gradient_dtype(v1::DTYPE_FLOAT32);
  }
  for (int64_t i = 0; i < batch; ++i) request.add_labels(label(rng));
  request.set_want_gradient(true);
  request.mutable_config()->set_loss_type(loss_type);
  return request;
}

struct Latency {
  double p50_us = 0, p99_us = 0;
  bool ok = true;
};

Latency Measure(v1::LossService::Stub* stub,
                const v1::ComputeLossRequest& request, int calls) {
  std::vector<double> us;
  Latency out;
  for (int k = 0; k < calls + 2; ++k) {  // two warm-up calls
    grpc::ClientContext context;
    v1::ComputeLossResponse response;
    const auto t0 = Clock::now();
    const grpc::Status s = stub->ComputeLoss(&context, request, &response);
    const double t =
        std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!s.ok()) {
      std::fprintf(stderr, "ComputeLoss failed: %s\n",
                   s.error_message().c_str());
      out.ok = false;
      return out;
    }
    if (k >= 2) us.push_back(t);
  }
  std::sort(us.begin(), us.end());
  out.p50_us = us[us.size() / 2];
  out.p99_us = us[std::min(us.size() - 1, (us.size() * 99) / 100)];
  return out;
}

// Calls per second from 8 threads sharing one channel, for `seconds`.
double Throughput(v1::LossService::Stub* stub,
                  const v1::ComputeLossRequest& request, double seconds) {
  constexpr int kCallers = 8;
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&] {
      while (Clock::now() < end && !failed) {
        grpc::ClientContext context;
        v1::ComputeLossResponse response;
        if (!stub->ComputeLoss(&context, request, &response).ok()) {
          failed = true;
          return;
        }
        done.fetch_add(1);
      }
    });
  }
  for (std::thread& t : callers) t.join();
  const double elapsed =
      std::chrono::duration<double>(Clock::now() - start).count();
  return failed ? -1.0 : static_cast<double>(done.load()) / elapsed;
}

std::string ServerPath(const BenchOptions& options) {
  if (!options.server_path.empty()) return options.server_path;
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return "cbloss-server";
  std::string path(self, len);
  return path.substr(0, path.rfind('/') + 1) + "cbloss-server";
}

// The echo server, with the server's tuning and the bench's extra channel
// arguments; null if it does not start.
std::unique_ptr<grpc::Server> StartEcho(
    EchoService* echo, const std::vector<std::pair<std::string, int>>& extra,
    int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           port);
  builder.SetMaxReceiveMessageSize(-1);
  builder.SetMaxSendMessageSize(-1);
  ApplyServerTuning(&builder);  // the echo gets the server's tuning too
  for (const auto& [name, value] : extra) {
    builder.AddChannelArgument(name, value);
  }
  builder.RegisterService(echo);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (*port == 0) return nullptr;
  return server;
}

struct Size {
  int64_t batch, classes;
  int calls;
  bool opt_in = false;  // runs only when --sizes names it
};

bool Selected(const BenchOptions& options, const Size& size) {
  return (options.sizes.empty() && !size.opt_in) ||
         absl::StrContains(
             absl::StrCat(",", options.sizes, ","),
             absl::StrCat(",", size.batch, "x", size.classes, ","));
}

// The two channels of the comparison.
struct Stubs {
  std::unique_ptr<v1::LossService::Stub> rpc, echo;
};

// Measures one size and dtype; appends a JSON record or prints a row. False
// if a call failed.
bool RunSize(const BenchOptions& options, const Size& size, bool bf16,
             v1::LossType loss_type, const Stubs& stubs, EchoService* echo,
             std::string* json) {
  const v1::ComputeLossRequest request =
      MakeRequest(size.batch, size.classes, bf16, loss_type);
  // The echo answers with exactly the bytes the server answers with.
  grpc::ClientContext context;
  v1::ComputeLossResponse response;
  if (const grpc::Status s =
          stubs.rpc->ComputeLoss(&context, request, &response);
      !s.ok()) {
    std::fprintf(stderr, "ComputeLoss failed: %s\n", s.error_message().c_str());
    return false;
  }
  const std::string response_bytes = response.SerializeAsString();
  echo->SetResponse(response_bytes);
  const int calls = options.quick ? 3 : size.calls;
  const Latency rpc = Measure(stubs.rpc.get(), request, calls);
  const Latency bare = Measure(stubs.echo.get(), request, calls);
  if (!rpc.ok || !bare.ok) return false;
  const double seconds = options.quick ? 0.1 : 1.5;
  const double rps = Throughput(stubs.rpc.get(), request, seconds);
  const double echo_rps = Throughput(stubs.echo.get(), request, seconds);
  const char* dtype = bf16 ? "bf16" : "f32";
  if (options.json) {
    absl::StrAppend(
        json, json->size() > 1 ? ",\n" : "\n", "  {\"batch\": ", size.batch,
        ", \"classes\": ", size.classes, ", \"dtype\": \"", dtype,
        "\", \"request_bytes\": ", request.ByteSizeLong(),
        ", \"response_bytes\": ", response_bytes.size(),
        ", \"rpc_p50_us\": ", rpc.p50_us, ", \"rpc_p99_us\": ", rpc.p99_us,
        ", \"echo_p50_us\": ", bare.p50_us, ", \"echo_p99_us\": ", bare.p99_us,
        ", \"throughput_rps_8_callers\": ", rps,
        ", \"echo_throughput_rps_8_callers\": ", echo_rps,
        options.loss.empty() ? "" : ", \"loss\": \"",
        options.loss.empty() ? "" : options.loss + "\"", "}");
  } else {
    std::printf("%6lld %6lld %5s %10zu %10zu %10.1f %10.1f %9.0f %9.0f\n",
                static_cast<long long>(size.batch),
                static_cast<long long>(size.classes), dtype,
                request.ByteSizeLong(), response_bytes.size(), rpc.p50_us,
                bare.p50_us, rps, echo_rps);
  }
  return true;
}

// Accumulating ComputeLoss on a run vs the same request without the run,
// one caller (p50) and 8 callers on the one run (throughput): the cost of
// LOSS.md section 11's bookkeeping (docs/RUNS.md).
bool RunAccumulate(const BenchOptions& options, const Size& size,
                   v1::LossType loss_type, v1::LossService::Stub* stub,
                   std::string* json) {
  const std::string run_name =
      absl::StrCat("bench-", size.batch, "x", size.classes);
  {
    v1::CreateRunRequest create;
    create.mutable_run()->set_name(run_name);
    create.mutable_run()->set_num_classes(static_cast<int>(size.classes));
    grpc::ClientContext context;
    v1::Run run;
    if (const grpc::Status s = stub->CreateRun(&context, create, &run);
        !s.ok()) {
      std::fprintf(stderr, "CreateRun failed: %s\n", s.error_message().c_str());
      return false;
    }
  }
  v1::ComputeLossRequest plain =
      MakeRequest(size.batch, size.classes, /*bf16=*/false, loss_type);
  v1::ComputeLossRequest accumulating = plain;
  accumulating.set_run(run_name);
  accumulating.set_accumulate(true);
  if (loss_type == v1::LOSS_TYPE_EQL_V2) {
    plain.set_run(run_name);  // EQL_V2 always reads a run
  }
  const int calls = options.quick ? 3 : size.calls;
  const Latency a = Measure(stub, plain, calls);
  const Latency b = Measure(stub, accumulating, calls);
  if (!a.ok || !b.ok) return false;
  const double seconds = options.quick ? 0.1 : 1.5;
  const double plain_rps = Throughput(stub, plain, seconds);
  const double accumulate_rps = Throughput(stub, accumulating, seconds);
  if (plain_rps < 0 || accumulate_rps < 0) return false;
  const std::string loss =
      options.loss.empty() ? std::string("softmax") : options.loss;
  if (options.json) {
    absl::StrAppend(
        json, json->size() > 1 ? ",\n" : "\n", "  {\"batch\": ", size.batch,
        ", \"classes\": ", size.classes, ", \"loss\": \"", loss,
        "\", \"plain_p50_us\": ", a.p50_us,
        ", \"accumulate_p50_us\": ", b.p50_us,
        ", \"p50_ratio\": ", b.p50_us / a.p50_us,
        ", \"plain_rps_8_callers\": ", plain_rps,
        ", \"accumulate_rps_8_callers_one_run\": ", accumulate_rps,
        ", \"throughput_ratio\": ", accumulate_rps / plain_rps, "}");
  } else {
    std::printf("%6lld %6lld %10s %10.1f %10.1f %6.2f %9.0f %9.0f %6.2f\n",
                static_cast<long long>(size.batch),
                static_cast<long long>(size.classes), loss.c_str(), a.p50_us,
                b.p50_us, b.p50_us / a.p50_us, plain_rps, accumulate_rps,
                accumulate_rps / plain_rps);
  }
  return true;
}

// Parses --loss and starts cbloss-server; 0, or the exit code (2: a bad
// loss type, 1: the server did not start).
int StartServer(const BenchOptions& options, v1::LossType* loss_type,
                std::unique_ptr<testing::ServerProcess>* server) {
  if (!options.loss.empty() && !ParseLossType(options.loss, loss_type)) {
    std::fprintf(stderr, "unknown loss type '%s'\n", options.loss.c_str());
    return 2;
  }
  testing::ServerProcessOptions server_options;
  server_options.binary = ServerPath(options);
  server_options.flags = {"--log_level=error"};
  *server = std::make_unique<testing::ServerProcess>(server_options);
  if (absl::Status s = (*server)->Start(); !s.ok()) {
    std::fprintf(stderr, "cannot start %s: %s\n", server_options.binary.c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int RunRuns(const BenchOptions& options) {
  v1::LossType loss_type = v1::LOSS_TYPE_UNSPECIFIED;
  std::unique_ptr<testing::ServerProcess> server;
  if (int code = StartServer(options, &loss_type, &server); code != 0) {
    return code;
  }
  std::unique_ptr<v1::LossService::Stub> stub = v1::LossService::NewStub(
      Connect(server->port(), ParseArgs(options.grpc_args)));
  const std::vector<Size> sizes = {{32, 10, 2000}, {256, 1000, 300}};
  std::string json = "[";
  if (!options.json) {
    std::printf("%6s %6s %10s %10s %10s %6s %9s %9s %6s\n", "batch", "classes",
                "loss", "plain_p50", "accum_p50", "ratio", "plain_rps8",
                "accum_rps8", "ratio");
  }
  for (const Size& size : sizes) {
    if (!Selected(options, size)) continue;
    if (!RunAccumulate(options, size, loss_type, stub.get(), &json)) return 1;
  }
  if (options.json) std::printf("%s\n]\n", json.c_str());
  return 0;
}

int RunService(const BenchOptions& options) {
  v1::LossType loss_type = v1::LOSS_TYPE_UNSPECIFIED;
  std::unique_ptr<testing::ServerProcess> server;
  if (int code = StartServer(options, &loss_type, &server); code != 0) {
    return code;
  }
  EchoService echo;
  const auto extra = ParseArgs(options.grpc_args);
  int echo_port = 0;
  std::unique_ptr<grpc::Server> echo_server =
      StartEcho(&echo, extra, &echo_port);
  if (echo_server == nullptr) {
    std::fprintf(stderr, "cannot start the echo server\n");
    return 1;
  }
  Stubs stubs;
  stubs.rpc = v1::LossService::NewStub(Connect(server->port(), extra));
  stubs.echo = v1::LossService::NewStub(Connect(echo_port, extra));

  const std::vector<Size> sizes = {
      {32, 10, 1000},
      {256, 1000, 200},
      {1024, 100, 200},
      {4096, 1000, 30},
      {8192, 1204, 20, /*opt_in=*/true}};  // LVIS-shaped (LOSS.md section 10)
  std::string json = "[";
  if (!options.json) {
    std::printf("%6s %6s %5s %10s %10s %10s %10s %9s %9s\n", "batch", "classes",
                "dtype", "req_bytes", "resp_bytes", "rpc_p50", "echo_p50",
                "rpc_rps8", "echo_rps8");
  }
  for (const Size& size : sizes) {
    if (!Selected(options, size)) continue;
    for (bool bf16 : {false, true}) {
      if (!RunSize(options, size, bf16, loss_type, stubs, &echo, &json)) {
        return 1;
      }
    }
  }
  if (options.json) std::printf("%s\n]\n", json.c_str());
  echo_server->Shutdown();
  return 0;
}

}  // namespace cbloss::bench
