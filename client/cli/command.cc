// Copyright 2026 The cbloss Authors.

#include "command.h"

#include <cstdlib>
#include <iostream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "loss_config.h"

namespace cbloss::cli {

void AddGlobalFlags(CLI::App* app, GlobalFlags* flags) {
  const char* env_target = std::getenv("CBLOSS_TARGET");
  flags->target = env_target ? env_target : "127.0.0.1:50051";
  app->add_option(
      "--target", flags->target,
      "server address HOST:PORT, or unix:/path of a Unix socket on this "
      "host (default 127.0.0.1:50051, or $CBLOSS_TARGET)");
  app->add_flag("--json", flags->json, "print one JSON document on stdout");
  flags->timeout = app->add_option("--timeout", flags->timeout_s,
                                   "per-call deadline in seconds (default 30)");
  app->add_flag("--tls", flags->tls,
                "use TLS (implied by --tls_ca/--tls_cert); system roots "
                "unless --tls_ca");
  app->add_option("--tls_ca", flags->tls_ca,
                  "PEM file of the CA that signs the server's certificate");
  CLI::Option* cert = app->add_option("--tls_cert", flags->tls_cert,
                                      "PEM client certificate (mutual TLS)");
  CLI::Option* key = app->add_option("--tls_key", flags->tls_key,
                                     "PEM private key of --tls_cert");
  cert->needs(key);
  key->needs(cert);
  app->add_option("--tls_server_name", flags->tls_server_name,
                  "name to check the server certificate against (default: "
                  "the target's host)");
  app->add_option("--token_file", flags->token_file,
                  "file holding the bearer token sent with every call "
                  "(default: $CBLOSS_TOKEN)");
}

absl::StatusOr<std::unique_ptr<client::Client>> Connect(
    const GlobalFlags& flags) {
  client::ClientOptions options;
  options.default_deadline = absl::Seconds(flags.timeout_s);
  if (flags.tls || !flags.tls_ca.empty() || !flags.tls_cert.empty()) {
    absl::Status s = client::LoadTlsFiles(flags.tls_ca, flags.tls_cert,
                                          flags.tls_key, &options);
    if (!s.ok()) return s;
    options.tls_server_name = flags.tls_server_name;
  }
  if (!flags.token_file.empty()) {
    absl::StatusOr<std::string> token = client::ReadTokenFile(flags.token_file);
    if (!token.ok()) return token.status();
    options.token = *std::move(token);
  } else if (const char* env_token = std::getenv("CBLOSS_TOKEN");
             env_token != nullptr) {
    options.token = std::string(
        absl::StripTrailingAsciiWhitespace(absl::string_view(env_token)));
  }
  return client::Client::Create(flags.target, options);
}

void SourceFlags::AddTo(CLI::App* command) {
  CLI::Option* d =
      command->add_option("--dataset", dataset, "a stored dataset's name");
  CLI::Option* c = command
                       ->add_option("--counts", counts,
                                    "inline class counts, e.g. 5000,2997,1796")
                       ->delimiter(',');
  d->excludes(c);
  c->excludes(d);
}

absl::StatusOr<client::LossSource> SourceFlags::Source() const {
  if (dataset.empty() && counts.empty()) {
    return absl::InvalidArgumentError("give --dataset or --counts");
  }
  return dataset.empty() ? client::LossSource::Counts(counts)
                         : client::LossSource::Dataset(dataset);
}

absl::StatusOr<v1::DType> ParseDType(const std::string& s) {
  const std::string l = absl::AsciiStrToLower(s);
  if (l == "f32" || l == "float32") return v1::DTYPE_FLOAT32;
  if (l == "f16" || l == "float16") return v1::DTYPE_FLOAT16;
  if (l == "bf16" || l == "bfloat16") return v1::DTYPE_BFLOAT16;
  absl::StatusOr<int> d = ParseEnumName(v1::DType_descriptor(), s, "--dtype");
  if (!d.ok()) return d.status();
  return static_cast<v1::DType>(*d);
}

int Fail(const absl::Status& status) {
  std::cerr << "cbloss: " << absl::StatusCodeToString(status.code()) << ": "
            << status.message() << "\n";
  return static_cast<int>(status.code()) + 1;
}

void PrintJson(const json& document) { std::cout << document.dump() << "\n"; }

json ProtoJson(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return json::parse(text);
}

json DatasetJson(const v1::Dataset& d) {
  json j = ProtoJson(d);
  j["class_counts"] =
      std::vector<int64_t>(d.class_counts().begin(), d.class_counts().end());
  j["version"] = d.version();
  return j;
}

int ShowDataset(const v1::Dataset& d, bool as_json) {
  if (as_json) {
    PrintJson(DatasetJson(d));
    return 0;
  }
  std::cout << "name:     " << d.name() << "\n"
            << "version:  " << d.version() << "\n"
            << "classes:  " << d.class_counts_size() << "\n"
            << "defaults: " << LossConfigText(d.defaults()) << "\n";
  std::cout << absl::StrFormat("%6s  %-16s %12s\n", "class", "name", "count");
  for (int j = 0; j < d.class_counts_size(); ++j) {
    std::cout << absl::StrFormat(
        "%6d  %-16s %12d\n", j,
        j < d.class_names_size() ? d.class_names(j) : "", d.class_counts(j));
  }
  return 0;
}

}  // namespace cbloss::cli
