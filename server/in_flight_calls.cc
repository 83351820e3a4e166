// Copyright 2026 The cbloss Authors.

#include "server/in_flight_calls.h"

#include <cstring>

namespace cbloss::server {
namespace {

// Lives exactly as long as its call.
class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit CountingInterceptor(InFlightCalls* calls) : calls_(calls) {
    calls_->Started();
  }
  ~CountingInterceptor() override { calls_->Finished(); }
  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    methods->Proceed();
  }

 private:
  InFlightCalls* const calls_;
};

class CountingFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingFactory(InFlightCalls* calls) : calls_(calls) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    const char* method = info->method();
    if (method != nullptr &&
        (std::strcmp(method, "/grpc.health.v1.Health/Watch") == 0 ||
         std::strncmp(method, "/grpc.reflection.", 17) == 0)) {
      return nullptr;  // long-lived; not drained
    }
    return new CountingInterceptor(calls_);
  }

 private:
  InFlightCalls* const calls_;
};

}  // namespace

int InFlightCalls::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

int InFlightCalls::AwaitIdle(absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                 [this] { return count_ == 0; });
  return count_;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
InFlightCalls::MakeInterceptorFactory() {
  return std::make_unique<CountingFactory>(this);
}

void InFlightCalls::Started() {
  std::lock_guard<std::mutex> lock(mu_);
  ++count_;
}

void InFlightCalls::Finished() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--count_ == 0) idle_.notify_all();
}

}  // namespace cbloss::server
