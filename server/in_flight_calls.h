// Copyright 2026 The cbloss Authors.
//
// Counts the calls a server has started and not finished, from the moment
// their headers arrive (a gRPC server interceptor is created per call), so a
// large request still being received counts too. Draining waits on it:
// health says NOT_SERVING, clients stop sending, in-flight calls finish, and
// then the server stops at once. gRPC's own Shutdown(deadline) would also
// wait out idle connections' graceful GOAWAY, up to the whole deadline.
//
// Long-lived watch streams (grpc.health.v1.Health/Watch, reflection) are not
// counted: they end with the server, not by themselves.
//
// Thread-safety: every method may be called concurrently.

#ifndef CBLOSS_SERVER_IN_FLIGHT_CALLS_H_
#define CBLOSS_SERVER_IN_FLIGHT_CALLS_H_

#include <condition_variable>
#include <memory>
#include <mutex>

#include "absl/time/time.h"
#include "grpcpp/support/server_interceptor.h"

namespace cbloss::server {

class InFlightCalls {
 public:
  int count() const;
  // Waits until no call is in flight or `timeout` passes; returns the count.
  int AwaitIdle(absl::Duration timeout) const;

  // An interceptor factory for grpc::ServerBuilder::experimental()
  // .SetInterceptorCreators; it must not outlive this object.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
  MakeInterceptorFactory();

  void Started();
  void Finished();

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable idle_;
  int count_ = 0;  // guarded by mu_
};

}  // namespace cbloss::server

#endif  // CBLOSS_SERVER_IN_FLIGHT_CALLS_H_
