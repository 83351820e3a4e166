// Copyright 2026 The cbloss Authors.

#include "cbloss/client_options.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace cbloss::client {
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

}  // namespace cbloss::client
