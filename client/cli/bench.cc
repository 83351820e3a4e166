// Copyright 2026 The cbloss Authors.
//
// `cbloss bench`: the load generator (load_generator.h) on the command line.

#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "command.h"
#include "load_generator.h"
#include "loss_config.h"

namespace cbloss::cli {
namespace {

struct BenchFlags {
  BenchOptions options;
  double duration_s = 10;
  std::string dtype = "f32", loss;
  SourceFlags source;
};

void PrintReport(const BenchReport& r, bool as_json) {
  if (as_json) {
    PrintJson(json{{"requests", r.requests},
                   {"errors", r.errors},
                   {"seconds", r.seconds},
                   {"rps", r.rps},
                   {"p50_us", r.p50_us},
                   {"p90_us", r.p90_us},
                   {"p99_us", r.p99_us},
                   {"error_samples", r.error_samples}});
    return;
  }
  std::cout << absl::StrFormat(
      "requests %d  errors %d  %.1f req/s  p50 %.0f us  p90 %.0f us  p99 "
      "%.0f us\n",
      r.requests, r.errors, r.rps, r.p50_us, r.p90_us, r.p99_us);
  for (const std::string& e : r.error_samples) {
    std::cout << "  error: " << e << "\n";
  }
}

int RunBenchCommand(const BenchFlags& f, const Context& context) {
  BenchOptions options = f.options;
  options.duration = absl::Seconds(f.duration_s);
  if (context.timeout) options.call_deadline = *context.timeout;
  options.dataset = f.source.dataset;
  options.counts = f.source.counts;
  absl::StatusOr<v1::DType> d = ParseDType(f.dtype);
  if (!d.ok()) return Fail(d.status());
  options.dtype = *d;
  if (!f.loss.empty()) {
    absl::StatusOr<int> t =
        ParseEnumName(v1::LossType_descriptor(), f.loss, "--loss");
    if (!t.ok()) return Fail(t.status());
    options.loss = static_cast<v1::LossType>(*t);
  }
  absl::StatusOr<BenchReport> r = RunBench(context.client, options);
  if (!r.ok()) return Fail(r.status());
  PrintReport(*r, context.json);
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App* app, Handler* chosen) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* bench =
      app->add_subcommand("bench", "load generator: ComputeLoss back to back");
  bench->add_option("--duration", f->duration_s, "seconds to run (default 10)");
  bench->add_option("--concurrency", f->options.concurrency,
                    "concurrent callers (default 4)");
  f->source.AddTo(bench);
  bench->add_option("--batch", f->options.batch,
                    "rows per request (default 256)");
  bench->add_option("--classes", f->options.classes,
                    "classes (default: from the dataset or counts)");
  bench->add_option("--dtype", f->dtype, "f32 (default), f16 or bf16");
  bench->add_option("--loss", f->loss, "loss type (default: the dataset's)");
  bench->callback([f, chosen] {
    *chosen = [f](const Context& context) {
      return RunBenchCommand(*f, context);
    };
  });
}

}  // namespace cbloss::cli
