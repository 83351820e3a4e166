// Copyright 2026 The cbloss Authors.
//
// cbloss-bench http: ComputeLoss with gradient through one real
// cbloss-server, over gRPC and over HTTP/JSON (--http_listen, docs/HTTP.md)
// in the same run, one call at a time on one kept-alive connection each.
// The request is float32 logits as `data` bytes (base64 in JSON, as a JSON
// client would send them for speed); the HTTP client sends a body encoded
// once and parses each JSON answer into a ComputeLossResponse (what a
// client must do to use it). Records: size, protocol, p50/p99 microseconds.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench.h"
#include "bench/server_process.h"
#include "cbloss/v1/cbloss.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"

namespace cbloss::bench {
namespace {

using Clock = std::chrono::steady_clock;

v1::ComputeLossRequest MakeRequest(int64_t batch, int64_t classes) {
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
  logits->set_dtype(v1::DTYPE_FLOAT32);
  std::string* data = logits->mutable_data();
  data->resize(batch * classes * 4);
  for (int64_t k = 0; k < batch * classes; ++k) {
    const float v = normal(rng);
    std::memcpy(data->data() + 4 * k, &v, 4);
  }
  for (int64_t i = 0; i < batch; ++i) request.add_labels(label(rng));
  request.set_want_gradient(true);
  request.set_gradient_dtype(v1::DTYPE_FLOAT32);
  return request;
}

struct Latency {
  double p50_us = 0, p99_us = 0;
  bool ok = false;
};

Latency Summarize(std::vector<double> us) {
  Latency out;
  if (us.empty()) return out;
  std::sort(us.begin(), us.end());
  out.p50_us = us[us.size() / 2];
  out.p99_us = us[std::min(us.size() - 1, (us.size() * 99) / 100)];
  out.ok = true;
  return out;
}

Latency MeasureGrpc(v1::LossService::Stub* stub,
                    const v1::ComputeLossRequest& request, int calls) {
  std::vector<double> us;
  for (int k = 0; k < calls + 2; ++k) {
    grpc::ClientContext context;
    v1::ComputeLossResponse response;
    const auto t0 = Clock::now();
    const grpc::Status s = stub->ComputeLoss(&context, request, &response);
    const double t =
        std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!s.ok()) {
      std::fprintf(stderr, "gRPC ComputeLoss failed: %s\n",
                   s.error_message().c_str());
      return {};
    }
    if (k >= 2) us.push_back(t);
  }
  return Summarize(std::move(us));
}

Latency MeasureHttp(httplib::Client* client, const std::string& body,
                    int calls) {
  std::vector<double> us;
  for (int k = 0; k < calls + 2; ++k) {
    const auto t0 = Clock::now();
    httplib::Result res = client->Post("/v1/loss", body, "application/json");
    v1::ComputeLossResponse response;
    const bool parsed =
        res && res->status == 200 &&
        google::protobuf::util::JsonStringToMessage(res->body, &response).ok();
    const double t =
        std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (!parsed) {
      std::fprintf(stderr, "HTTP ComputeLoss failed: %s\n",
                   res ? res->body.c_str() : "no answer");
      return {};
    }
    if (k >= 2) us.push_back(t);
  }
  return Summarize(std::move(us));
}

std::string ServerPath(const BenchOptions& options) {
  if (!options.server_path.empty()) return options.server_path;
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return "cbloss-server";
  std::string path(self, len);
  return path.substr(0, path.rfind('/') + 1) + "cbloss-server";
}

int ReadPort(const std::string& path) {
  for (int i = 0; i < 2000; ++i) {
    std::ifstream in(path);
    int port = 0;
    if (in >> port && port > 0) return port;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return 0;
}

}  // namespace

int RunHttp(const BenchOptions& options) {
  testing::ServerProcessOptions server_options;
  server_options.binary = ServerPath(options);
  server_options.flags = {"--log_level=error"};
  // The port file's directory is the server's, known only after Start: use
  // one of our own.
  char dir_template[] = "/tmp/cbloss-http-bench-XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) return 1;
  const std::string port_file = absl::StrCat(dir, "/http.port");
  testing::ServerProcess http_server(server_options);
  if (absl::Status s = http_server.Start(
          {"--http_listen=127.0.0.1:0", "--http_port_file=" + port_file});
      !s.ok()) {
    std::fprintf(stderr, "cannot start %s: %s\n", server_options.binary.c_str(),
                 std::string(s.message()).c_str());
    return 1;
  }
  const int http_port = ReadPort(port_file);
  std::remove(port_file.c_str());
  rmdir(dir);
  if (http_port == 0) {
    std::fprintf(stderr, "no HTTP port in %s\n", port_file.c_str());
    return 1;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  auto stub = v1::LossService::NewStub(grpc::CreateCustomChannel(
      http_server.target(), grpc::InsecureChannelCredentials(), args));
  httplib::Client client("127.0.0.1", http_port);
  std::string json_floor;
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);
  client.set_read_timeout(60, 0);

  if (!options.json) {
    std::printf("%-10s %-6s %10s %10s\n", "size", "proto", "p50_us", "p99_us");
  }
  // The HTTP floor: GET /healthz (no JSON, no handler) on the same client.
  {
    std::vector<double> us;
    for (int k = 0; k < (options.quick ? 20 : 2000); ++k) {
      const auto t0 = Clock::now();
      httplib::Result res = client.Get("/healthz");
      if (!res || res->status != 200) return 1;
      us.push_back(
          std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    const Latency floor = Summarize(std::move(us));
    if (options.json) {
      absl::StrAppend(
          &json_floor,
          absl::StrFormat("{\"bench\":\"http\",\"size\":\"healthz\","
                          "\"protocol\":\"http\",\"p50_us\":%.1f,"
                          "\"p99_us\":%.1f}",
                          floor.p50_us, floor.p99_us));
    } else {
      std::printf("%-10s %-6s %10.1f %10.1f\n", "healthz", "http", floor.p50_us,
                  floor.p99_us);
    }
  }
  std::string json = "[" + json_floor;
  struct Size {
    int64_t batch, classes;
    int calls;
  };
  const std::vector<Size> sizes = {{32, 10, 2000}, {256, 1000, 200}};
  for (const Size& size : sizes) {
    const int calls = options.quick ? 20 : size.calls;
    const v1::ComputeLossRequest request =
        MakeRequest(size.batch, size.classes);
    std::string body;
    if (!google::protobuf::util::MessageToJsonString(request, &body).ok()) {
      return 1;
    }
    const std::string name = absl::StrCat(size.batch, "x", size.classes);
    const Latency g = MeasureGrpc(stub.get(), request, calls);
    const Latency h = MeasureHttp(&client, body, calls);
    if (!g.ok || !h.ok) return 1;
    for (const auto& [proto, l] :
         {std::pair<const char*, Latency>{"grpc", g}, {"http", h}}) {
      if (options.json) {
        absl::StrAppend(
            &json, json.size() > 1 ? "," : "",
            absl::StrFormat("{\"bench\":\"http\",\"size\":\"%s\",\"protocol\":"
                            "\"%s\",\"p50_us\":%.1f,\"p99_us\":%.1f}",
                            name, proto, l.p50_us, l.p99_us));
      } else {
        std::printf("%-10s %-6s %10.1f %10.1f\n", name.c_str(), proto, l.p50_us,
                    l.p99_us);
      }
    }
    if (options.json) {
      absl::StrAppend(&json,
                      absl::StrFormat(",{\"bench\":\"http\",\"size\":\"%s\","
                                      "\"http_over_grpc_p50\":%.3f}",
                                      name, h.p50_us / g.p50_us));
    } else {
      std::printf("%-10s http/grpc p50 = %.2fx\n", name.c_str(),
                  h.p50_us / g.p50_us);
    }
  }
  if (options.json) std::printf("%s]\n", json.c_str());
  return 0;
}

}  // namespace cbloss::bench
