// Copyright 2026 The cbloss Authors.

#include "server/logging.h"

#include <chrono>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/formatter.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/basic_file_sink.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace cbloss::server {
namespace {

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromChrono(t),
                          absl::UTCTimeZone());
}

// {"time":...,"level":...,"message":...} per line.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    const spdlog::string_view_t level =
        spdlog::level::to_string_view(msg.level);
    const std::string line = absl::StrCat(
        "{\"time\":\"", Rfc3339(msg.time), "\",\"level\":\"",
        absl::string_view(level.data(), level.size()), "\",\"message\":\"",
        JsonEscape(absl::string_view(msg.payload.data(), msg.payload.size())),
        "\"}\n");
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace

absl::Status ParseLogFormat(absl::string_view name, LogFormat* format) {
  if (name == "text") {
    *format = LogFormat::kText;
  } else if (name == "json") {
    *format = LogFormat::kJson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_format=", name, " is not text or json"));
  }
  return absl::OkStatus();
}

absl::Status SetUpLogging(const std::string& level_name, LogFormat format) {
  auto logger = format == LogFormat::kJson ? spdlog::stderr_logger_mt("cbloss")
                                           : spdlog::stderr_color_mt("cbloss");
  if (format == LogFormat::kJson) {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  }
  spdlog::set_default_logger(logger);
  const auto level = spdlog::level::from_str(level_name);
  if (level == spdlog::level::off && level_name != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_level=", level_name, " is not a spdlog level"));
  }
  spdlog::set_level(level);
  return absl::OkStatus();
}

std::string JsonEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<AccessLog>> AccessLog::Open(
    const std::string& destination, LogFormat format) {
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (destination == "stderr") {
      logger = std::make_shared<spdlog::logger>(
          "access", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    } else {
      logger = std::make_shared<spdlog::logger>(
          "access",
          std::make_shared<spdlog::sinks::basic_file_sink_mt>(destination));
    }
  } catch (const spdlog::spdlog_ex& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open --access_log=", destination, ": ", e.what()));
  }
  // Lines are made whole by Write; the file sink adds nothing.
  logger->set_formatter(std::make_unique<spdlog::pattern_formatter>(
      "%v", spdlog::pattern_time_type::utc));
  logger->set_level(spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  return std::unique_ptr<AccessLog>(new AccessLog(std::move(logger), format));
}

AccessLog::AccessLog(std::shared_ptr<spdlog::logger> logger, LogFormat format)
    : logger_(std::move(logger)), format_(format) {}

AccessLog::~AccessLog() { logger_->flush(); }

void AccessLog::Write(const AccessRecord& r) {
  const std::string time = Rfc3339(std::chrono::system_clock::now());
  std::string line;
  if (format_ == LogFormat::kJson) {
    line = absl::StrCat(
        "{\"time\":\"", time,
        "\",\"level\":\"info\",\"message\":\"access\",\"protocol\":\"",
        JsonEscape(r.protocol), "\",\"method\":\"", JsonEscape(r.method),
        "\",\"peer\":\"", JsonEscape(r.peer), "\",\"code\":", r.code,
        ",\"status\":\"", CodeName(r.code), "\"");
    if (r.http_status != 0) {
      absl::StrAppend(&line, ",\"http_status\":", r.http_status);
    }
    absl::StrAppend(
        &line, ",\"duration_ms\":", absl::StrFormat("%.3f", r.duration_ms),
        ",\"elements\":", r.elements, ",\"dataset\":\"", JsonEscape(r.dataset),
        "\",\"run\":\"", JsonEscape(r.run), "\"}");
  } else {
    line = absl::StrCat(time, " access protocol=", r.protocol,
                        " method=", r.method, " peer=", r.peer,
                        " code=", CodeName(r.code));
    if (r.http_status != 0)
      absl::StrAppend(&line, " http_status=", r.http_status);
    absl::StrAppend(&line,
                    " duration_ms=", absl::StrFormat("%.3f", r.duration_ms),
                    " elements=", r.elements,
                    " dataset=", r.dataset.empty() ? "-" : r.dataset,
                    " run=", r.run.empty() ? "-" : r.run);
  }
  logger_->info("{}", line);
}

}  // namespace cbloss::server
