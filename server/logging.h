// Copyright 2026 The cbloss Authors.
//
// cbloss-server's logs (docs/spec/API.md section 5.5).
//
//   --log_format=text   spdlog's usual lines on stderr (the default).
//   --log_format=json   one JSON object per line on stderr:
//                       {"time":"2026-12-01T13:00:00.123456Z","level":"info",
//                        "message":"..."} (RFC 3339, UTC).
//   --access_log=DEST   one line per call (gRPC and HTTP): "stderr" (beside
//                       the other logs) or a file path; empty: off. Fields:
//                       protocol, method, peer, code, status, duration_ms,
//                       elements, dataset, run. Never a token or a payload.
//
// Thread-safety: SetUpLogging once, before any thread starts; AccessLog
// methods may be called concurrently.

#ifndef CBLOSS_SERVER_LOGGING_H_
#define CBLOSS_SERVER_LOGGING_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace spdlog {
class logger;
}

namespace cbloss::server {

enum class LogFormat { kText, kJson };

// Parses "text" / "json".
absl::Status ParseLogFormat(absl::string_view name, LogFormat* format);

// Installs the default spdlog logger: stderr, `format`, `level_name`.
absl::Status SetUpLogging(const std::string& level_name, LogFormat format);

// `s` as the body of a JSON string (quotes not included).
std::string JsonEscape(absl::string_view s);

// One call, as the access log shows it.
struct AccessRecord {
  absl::string_view protocol;  // "grpc" or "http"
  absl::string_view method;    // the LossService method ("ComputeLoss")
  absl::string_view peer;      // "ipv4:127.0.0.1:5555"
  int code = 0;                // gRPC status code number
  int http_status = 0;         // 0 for gRPC
  double duration_ms = 0;
  int64_t elements = 0;  // logits elements B * C; 0 if none
  absl::string_view dataset;
  absl::string_view run;
};

class AccessLog {
 public:
  // `destination`: "stderr" or a file path (appended to).
  static absl::StatusOr<std::unique_ptr<AccessLog>> Open(
      const std::string& destination, LogFormat format);
  ~AccessLog();

  void Write(const AccessRecord& record);

 private:
  AccessLog(std::shared_ptr<spdlog::logger> logger, LogFormat format);

  std::shared_ptr<spdlog::logger> logger_;
  const LogFormat format_;
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_LOGGING_H_
