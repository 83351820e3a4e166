// Copyright 2026 The cbloss Authors.
//
// The gRPC service config of the client's channel (private to the client
// library and its tests): the balancing policy of ClientOptions, and, with
// ClientOptions::retry_unavailable, the retry policy of
// proto/cbloss/v1/service_config.json, embedded at build time (the Python
// client reads the same file).

#ifndef CBLOSS_CLIENT_SERVICE_CONFIG_H_
#define CBLOSS_CLIENT_SERVICE_CONFIG_H_

#include <string>

#include "cbloss/client_options.h"

namespace cbloss::client {

// The JSON given to grpc::ChannelArguments::SetServiceConfigJSON.
std::string ServiceConfigJson(const ClientOptions& options);

}  // namespace cbloss::client

#endif  // CBLOSS_CLIENT_SERVICE_CONFIG_H_
