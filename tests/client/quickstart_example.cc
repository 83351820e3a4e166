// Copyright 2026 The cbloss Authors.
//
// cbloss C++ quick start: train a tiny linear classifier on a long-tailed toy
// problem with the class-balanced focal loss computed by the cbloss service.
//
//   quickstart_example [HOST:PORT]   (default: $CBLOSS_TARGET, else
//   127.0.0.1:50051)
//
// The model is logits = x * W (B samples, D features, C classes). Each step
// sends the logits and labels, receives the loss and dL/dlogits, and updates
// W by hand: dL/dW = x^T * dL/dlogits.

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cbloss/client.h"

int main(int argc, char** argv) {
  const char* env_target = std::getenv("CBLOSS_TARGET");
  const std::string target = argc > 1     ? argv[1]
                             : env_target ? env_target
                                          : "127.0.0.1:50051";
  absl::StatusOr<std::unique_ptr<cbloss::client::Client>> created =
      cbloss::client::Client::Create(target);
  if (!created.ok()) {
    std::cerr << created.status() << "\n";
    return 1;
  }
  cbloss::client::Client& client = **created;

  // 1. Register the training set's class counts and loss defaults once.
  constexpr int64_t kClasses = 4;
  const std::vector<int64_t> counts = {500, 120, 30, 8};
  cbloss::v1::Dataset dataset;
  dataset.set_name("quickstart-toy-lt");
  dataset.mutable_class_counts()->Assign(counts.begin(), counts.end());
  dataset.mutable_defaults()->set_loss_type(cbloss::v1::LOSS_TYPE_FOCAL);
  dataset.mutable_defaults()->set_beta(0.999);
  dataset.mutable_defaults()->set_gamma(1.0);
  absl::StatusOr<cbloss::v1::Dataset> stored = client.PutDataset(dataset);
  if (!stored.ok()) {
    std::cerr << "PutDataset: " << stored.status() << "\n";
    return 1;
  }
  absl::StatusOr<cbloss::v1::ClassWeights> weights = client.GetClassWeights(
      cbloss::client::LossSource::Dataset("quickstart-toy-lt"));
  if (!weights.ok()) {
    std::cerr << "GetClassWeights: " << weights.status() << "\n";
    return 1;
  }
  std::cout << "dataset version " << stored->version() << ", class weights";
  for (double w : weights->weights()) std::cout << " " << w;
  std::cout << "\n";

  // 2. A toy batch: each class's features are centred on a different axis.
  constexpr int64_t kBatch = 64, kFeatures = 8;
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  std::discrete_distribution<int32_t> draw_class(counts.begin(), counts.end());
  std::vector<float> x(kBatch * kFeatures);
  std::vector<int32_t> labels(kBatch);
  for (int64_t i = 0; i < kBatch; ++i) {
    labels[i] = draw_class(rng);
    for (int64_t f = 0; f < kFeatures; ++f) {
      x[i * kFeatures + f] = noise(rng) + (f == labels[i] ? 2.0f : 0.0f);
    }
  }

  // 3. Training steps over one LossStream (one stream per training loop).
  std::vector<float> w(kFeatures * kClasses, 0.0f);
  std::vector<float> logits(kBatch * kClasses), grad(kBatch * kClasses);
  std::unique_ptr<cbloss::client::LossStream> stream = client.OpenLossStream();
  // No config overrides: the dataset's defaults, focal with beta 0.999.
  cbloss::client::LossOptions options;
  options.gradient_out = absl::MakeSpan(grad);  // dL/dlogits lands here
  constexpr float kLearningRate = 0.5f;
  double first_loss = 0, loss = 0;
  for (int step = 0; step < 20; ++step) {
    for (int64_t i = 0; i < kBatch; ++i) {  // logits = x * W
      for (int64_t c = 0; c < kClasses; ++c) {
        float z = 0;
        for (int64_t f = 0; f < kFeatures; ++f) {
          z += x[i * kFeatures + f] * w[f * kClasses + c];
        }
        logits[i * kClasses + c] = z;
      }
    }
    absl::StatusOr<cbloss::client::LossResult> result = stream->Compute(
        cbloss::client::LossSource::Dataset("quickstart-toy-lt"),
        cbloss::client::Logits::Float32(logits, kBatch, kClasses),
        cbloss::client::Labels(labels), options);
    if (!result.ok()) {
      std::cerr << "step " << step << ": " << result.status() << "\n";
      return 1;
    }
    loss = result->loss;
    if (step == 0) first_loss = loss;
    if (step % 5 == 0) std::cout << "step " << step << " loss " << loss << "\n";
    for (int64_t f = 0; f < kFeatures; ++f) {  // W -= lr * x^T * grad
      for (int64_t c = 0; c < kClasses; ++c) {
        float dw = 0;
        for (int64_t i = 0; i < kBatch; ++i) {
          dw += x[i * kFeatures + f] * grad[i * kClasses + c];
        }
        w[f * kClasses + c] -= kLearningRate * dw;
      }
    }
  }
  absl::Status closed = stream->Close();
  if (!closed.ok()) {
    std::cerr << "Close: " << closed << "\n";
    return 1;
  }
  std::cout << "final loss " << loss << " (first " << first_loss << ")\n";
  return loss < first_loss ? 0 : 1;
}
