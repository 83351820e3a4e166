// Copyright 2026 The cbloss Authors.
//
// cbloss: the command-line client (API.md section 4). Every command prints a
// readable table, or one JSON document on stdout with --json. Errors go to
// stderr as one line; the exit code is the gRPC status code + 1 (usage
// errors: CLI11's codes, also non-zero).

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "arrays.h"
#include "bench.h"
#include "cbloss/client.h"
#include "core/half.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace cbloss::cli {
namespace {

using json = nlohmann::json;

// Short names of the CLI and docs ("focal", "mean", "bf16"), or the enum's
// full name ("LOSS_TYPE_FOCAL").
template <typename Enum>
absl::StatusOr<Enum> ParseEnum(const std::string& text,
                               const std::string& prefix,
                               bool (*parse)(const std::string&, Enum*),
                               const std::string& what) {
  std::string upper = absl::AsciiStrToUpper(text);
  Enum value;
  if (parse(upper, &value) || parse(prefix + upper, &value)) return value;
  return absl::InvalidArgumentError(
      absl::StrCat(what, " '", text, "' is not known"));
}

absl::StatusOr<v1::LossType> ParseLossType(const std::string& s) {
  return ParseEnum<v1::LossType>(s, "LOSS_TYPE_", v1::LossType_Parse, "--loss");
}
absl::StatusOr<v1::Reduction> ParseReduction(const std::string& s) {
  return ParseEnum<v1::Reduction>(s, "REDUCTION_", v1::Reduction_Parse,
                                  "--reduction");
}
absl::StatusOr<v1::WeightingScheme> ParseScheme(const std::string& s) {
  return ParseEnum<v1::WeightingScheme>(s, "WEIGHTING_SCHEME_",
                                        v1::WeightingScheme_Parse, "--scheme");
}
absl::StatusOr<v1::DType> ParseDType(const std::string& s) {
  const std::string l = absl::AsciiStrToLower(s);
  if (l == "f32" || l == "float32") return v1::DTYPE_FLOAT32;
  if (l == "f16" || l == "float16") return v1::DTYPE_FLOAT16;
  if (l == "bf16" || l == "bfloat16") return v1::DTYPE_BFLOAT16;
  return ParseEnum<v1::DType>(s, "DTYPE_", v1::DType_Parse, "--dtype");
}

std::string ShortName(const std::string& enum_name, const std::string& prefix) {
  return absl::AsciiStrToLower(enum_name.substr(
      absl::StartsWith(enum_name, prefix) ? prefix.size() : 0));
}

json ProtoJson(const google::protobuf::Message& m) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &text, options);
  return json::parse(text);
}

// A dataset as JSON with counts as numbers (protobuf JSON writes int64 as
// strings).
json DatasetJson(const v1::Dataset& d) {
  json j = ProtoJson(d);
  j["class_counts"] =
      std::vector<int64_t>(d.class_counts().begin(), d.class_counts().end());
  j["version"] = d.version();
  return j;
}

std::string ConfigText(const v1::LossConfig& c) {
  std::vector<std::string> parts;
  if (c.loss_type())
    parts.push_back("loss=" +
                    ShortName(v1::LossType_Name(c.loss_type()), "LOSS_TYPE_"));
  if (c.weighting())
    parts.push_back("scheme=" +
                    ShortName(v1::WeightingScheme_Name(c.weighting()),
                              "WEIGHTING_SCHEME_"));
  if (c.has_beta()) parts.push_back(absl::StrCat("beta=", c.beta()));
  if (c.has_gamma()) parts.push_back(absl::StrCat("gamma=", c.gamma()));
  if (c.reduction())
    parts.push_back("reduction=" +
                    ShortName(v1::Reduction_Name(c.reduction()), "REDUCTION_"));
  if (c.has_ignore_index())
    parts.push_back(absl::StrCat("ignore_index=", c.ignore_index()));
  // Section 9 parameters only where their loss uses them.
  if (c.has_tau() && c.loss_type() == v1::LOSS_TYPE_LOGIT_ADJUSTED) {
    parts.push_back(absl::StrCat("tau=", c.tau()));
  }
  if (c.loss_type() == v1::LOSS_TYPE_LDAM) {
    if (c.has_max_margin())
      parts.push_back(absl::StrCat("max_margin=", c.max_margin()));
    if (c.has_scale()) parts.push_back(absl::StrCat("scale=", c.scale()));
  }
  if (c.has_drw_start_epoch())
    parts.push_back(absl::StrCat("drw_start_epoch=", c.drw_start_epoch()));
  return parts.empty() ? "(service defaults)" : absl::StrJoin(parts, " ");
}

void PrintDataset(const v1::Dataset& d) {
  std::cout << "name:     " << d.name() << "\n"
            << "version:  " << d.version() << "\n"
            << "classes:  " << d.class_counts_size() << "\n"
            << "defaults: " << ConfigText(d.defaults()) << "\n";
  std::cout << absl::StrFormat("%6s  %-16s %12s\n", "class", "name", "count");
  for (int j = 0; j < d.class_counts_size(); ++j) {
    std::cout << absl::StrFormat(
        "%6d  %-16s %12d\n", j,
        j < d.class_names_size() ? d.class_names(j) : "", d.class_counts(j));
  }
}

// Prints a dataset (put, get, add-counts) as a table or JSON; returns 0.
int ShowDataset(const v1::Dataset& d, bool as_json) {
  if (as_json) {
    std::cout << DatasetJson(d).dump() << "\n";
  } else {
    PrintDataset(d);
  }
  return 0;
}

// Options shared by commands that compute.
struct LossFlags {
  std::string dataset;
  std::vector<int64_t> counts;
  std::string loss, reduction, scheme;
  double beta = -1, gamma = -1;
  int ignore_index = 0;
  double tau = 0, max_margin = 0, scale = 0;  // LOSS.md section 9
  int drw_start_epoch = 0;
};

// True if `cmd` has the option and it was given.
bool Given(CLI::App* cmd, const std::string& option) {
  const CLI::Option* o = cmd->get_option_no_throw(option);
  return o != nullptr && o->count() > 0;
}

absl::StatusOr<v1::LossConfig> ConfigFrom(const LossFlags& f, CLI::App* cmd) {
  v1::LossConfig c;
  if (!f.loss.empty()) {
    absl::StatusOr<v1::LossType> t = ParseLossType(f.loss);
    if (!t.ok()) return t.status();
    c.set_loss_type(*t);
  }
  if (!f.reduction.empty()) {
    absl::StatusOr<v1::Reduction> r = ParseReduction(f.reduction);
    if (!r.ok()) return r.status();
    c.set_reduction(*r);
  }
  if (!f.scheme.empty()) {
    absl::StatusOr<v1::WeightingScheme> s = ParseScheme(f.scheme);
    if (!s.ok()) return s.status();
    c.set_weighting(*s);
  }
  if (Given(cmd, "--beta")) c.set_beta(f.beta);
  if (Given(cmd, "--gamma")) c.set_gamma(f.gamma);
  if (Given(cmd, "--ignore-index")) c.set_ignore_index(f.ignore_index);
  if (Given(cmd, "--tau")) c.set_tau(f.tau);
  if (Given(cmd, "--max-margin")) c.set_max_margin(f.max_margin);
  if (Given(cmd, "--scale")) c.set_scale(f.scale);
  if (Given(cmd, "--drw-start-epoch")) c.set_drw_start_epoch(f.drw_start_epoch);
  return c;
}

void AddSourceFlags(CLI::App* cmd, LossFlags* f) {
  auto* d = cmd->add_option("--dataset", f->dataset, "a stored dataset's name");
  auto* c = cmd->add_option("--counts", f->counts,
                            "inline class counts, e.g. 5000,2997,1796")
                ->delimiter(',');
  d->excludes(c);
  c->excludes(d);
}

void AddConfigFlags(CLI::App* cmd, LossFlags* f, bool loss_flags) {
  cmd->add_option("--beta", f->beta, "effective-number beta in [0, 1]");
  cmd->add_option("--scheme", f->scheme,
                  "weighting: effective_number, inverse_frequency, "
                  "inverse_sqrt_frequency, none");
  if (!loss_flags) return;
  cmd->add_option(
      "--loss", f->loss,
      "softmax, sigmoid, focal, softmax_bce (and LOSS.md section 9 types)");
  cmd->add_option("--gamma", f->gamma, "focal gamma >= 0");
  cmd->add_option("--reduction", f->reduction,
                  "mean, sum, element_mean, weighted_mean, none");
  cmd->add_option("--ignore-index", f->ignore_index,
                  "label value of ignored samples (default -100)");
  cmd->add_option("--tau", f->tau,
                  "logit_adjusted: temperature tau >= 0 (default 1)");
  cmd->add_option("--max-margin", f->max_margin,
                  "ldam: largest margin > 0 (default 0.5)");
  cmd->add_option("--scale", f->scale, "ldam: logit scale > 0 (default 30)");
  cmd->add_option(
      "--drw-start-epoch", f->drw_start_epoch,
      "deferred re-weighting: class weights are 1 before this epoch");
}

int Fail(const absl::Status& s) {
  std::cerr << "cbloss: " << absl::StatusCodeToString(s.code()) << ": "
            << s.message() << "\n";
  return static_cast<int>(s.code()) + 1;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"cbloss: command-line client of the cbloss loss service"};
  app.require_subcommand(1);
  const char* env_target = std::getenv("CBLOSS_TARGET");
  std::string target = env_target ? env_target : "127.0.0.1:50051";
  bool as_json = false;
  double timeout_s = 30;
  app.add_option(
      "--target", target,
      "server address HOST:PORT (default 127.0.0.1:50051, or $CBLOSS_TARGET)");
  app.add_flag("--json", as_json, "print one JSON document on stdout");
  app.add_option("--timeout", timeout_s,
                 "per-call deadline in seconds (default 30)");
  bool use_tls = false;
  std::string tls_ca, tls_cert, tls_key, tls_server_name, token_file;
  app.add_flag("--tls", use_tls,
               "use TLS (implied by --tls_ca/--tls_cert); system roots "
               "unless --tls_ca");
  app.add_option("--tls_ca", tls_ca,
                 "PEM file of the CA that signs the server's certificate");
  auto* tls_cert_opt = app.add_option("--tls_cert", tls_cert,
                                      "PEM client certificate (mutual TLS)");
  auto* tls_key_opt =
      app.add_option("--tls_key", tls_key, "PEM private key of --tls_cert");
  tls_cert_opt->needs(tls_key_opt);
  tls_key_opt->needs(tls_cert_opt);
  app.add_option("--tls_server_name", tls_server_name,
                 "name to check the server certificate against (default: "
                 "the target's host)");
  app.add_option("--token_file", token_file,
                 "file holding the bearer token sent with every call "
                 "(default: $CBLOSS_TOKEN)");

  auto* health =
      app.add_subcommand("health", "exit 0 if the server is SERVING");

  auto* datasets = app.add_subcommand(
      "datasets", "manage datasets (class counts + defaults)");
  datasets->require_subcommand(1);
  std::string name;
  std::vector<int64_t> counts;
  std::vector<std::string> names;
  LossFlags put_flags;
  uint64_t expected_version = 0;
  auto* put = datasets->add_subcommand("put", "create or replace a dataset");
  put->add_option("name", name, "dataset name")->required();
  put->add_option("--counts", put_flags.counts,
                  "class counts, e.g. 5000,2997,1796")
      ->delimiter(',')
      ->required();
  put->add_option("--names", names, "class names, e.g. cat,dog")
      ->delimiter(',');
  AddConfigFlags(put, &put_flags, /*loss_flags=*/true);
  put->add_option("--expected-version", expected_version,
                  "0: must not exist yet; N: must be at version N");
  auto* get = datasets->add_subcommand("get", "show one dataset");
  get->add_option("name", name, "dataset name")->required();
  auto* list = datasets->add_subcommand("list", "list every dataset");
  auto* del = datasets->add_subcommand("delete", "delete a dataset");
  del->add_option("name", name, "dataset name")->required();
  del->add_option("--expected-version", expected_version,
                  "must be at version N");
  std::vector<int64_t> deltas;
  std::string add_labels;
  auto* add = datasets->add_subcommand("add-counts",
                                       "add to a dataset's counts, atomically");
  add->add_option("name", name, "dataset name")->required();
  auto* deltas_opt =
      add->add_option("--deltas", deltas, "one delta per class, e.g. 10,0,-2")
          ->delimiter(',');
  auto* labels_opt = add->add_option(
      "--labels", add_labels,
      "labels of new samples: a list 0,3,3 or a .npy/.csv file");
  add->callback([&] {
    if (!*deltas_opt && !*labels_opt)
      throw CLI::ValidationError("give --deltas and/or --labels");
  });

  LossFlags weights_flags;
  auto* weights =
      app.add_subcommand("weights", "class weights w of LOSS.md section 2");
  AddSourceFlags(weights, &weights_flags);
  AddConfigFlags(weights, &weights_flags, /*loss_flags=*/false);

  LossFlags loss_flags;
  std::string logits_path, labels_arg, targets_path, gradient_out,
      sample_weights_arg, gradient_dtype_arg;
  bool per_sample = false;
  auto* loss =
      app.add_subcommand("loss", "compute a batch's loss (and gradient)");
  AddSourceFlags(loss, &loss_flags);
  AddConfigFlags(loss, &loss_flags, /*loss_flags=*/true);
  loss->add_option("--logits", logits_path,
                   "logits [B, C]: .npy (float32/float16) or .csv")
      ->required();
  auto* l_opt = loss->add_option("--labels", labels_arg,
                                 "labels: .npy (int32/int64), .csv, or a list");
  auto* t_opt =
      loss->add_option("--targets", targets_path,
                       "targets [B, C] in [0, 1]: .npy (float32) or .csv");
  l_opt->excludes(t_opt);
  loss->add_option("--sample-weights", sample_weights_arg,
                   "per-sample weights: file or list");
  loss->add_option("--gradient-out", gradient_out,
                   "write dL/dlogits here (.npy, or .csv)");
  loss->add_option("--gradient-dtype", gradient_dtype_arg,
                   "f32 (default), f16 or bf16");
  loss->add_flag("--per-sample", per_sample, "also print per-sample losses");
  int epoch = 0;
  loss->add_option("--epoch", epoch,
                   "training epoch, for deferred re-weighting");
  loss->callback([&] {
    if (!*l_opt && !*t_opt)
      throw CLI::ValidationError("give --labels or --targets");
  });

  BenchOptions bench_options;
  double duration_s = 10;
  std::string bench_dtype = "f32", bench_loss;
  LossFlags bench_flags;
  auto* bench =
      app.add_subcommand("bench", "load generator: ComputeLoss back to back");
  bench->add_option("--duration", duration_s, "seconds to run (default 10)");
  bench->add_option("--concurrency", bench_options.concurrency,
                    "concurrent callers (default 4)");
  AddSourceFlags(bench, &bench_flags);
  bench->add_option("--batch", bench_options.batch,
                    "rows per request (default 256)");
  bench->add_option("--classes", bench_options.classes,
                    "classes (default: from the dataset or counts)");
  bench->add_option("--dtype", bench_dtype, "f32 (default), f16 or bf16");
  bench->add_option("--loss", bench_loss, "loss type (default: the dataset's)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  ClientOptions options;
  options.default_deadline = absl::Seconds(timeout_s);
  if (use_tls || !tls_ca.empty() || !tls_cert.empty()) {
    if (absl::Status s = LoadTlsFiles(tls_ca, tls_cert, tls_key, &options);
        !s.ok()) {
      return Fail(s);
    }
    options.tls_server_name = tls_server_name;
  }
  if (!token_file.empty()) {
    absl::StatusOr<std::string> token = ReadTokenFile(token_file);
    if (!token.ok()) return Fail(token.status());
    options.token = *std::move(token);
  } else if (const char* env_token = std::getenv("CBLOSS_TOKEN");
             env_token != nullptr) {
    options.token = std::string(
        absl::StripTrailingAsciiWhitespace(absl::string_view(env_token)));
  }
  absl::StatusOr<std::unique_ptr<Client>> created =
      Client::Create(target, options);
  if (!created.ok()) return Fail(created.status());
  Client& client = **created;

  if (*health) {
    absl::Status s = client.CheckHealth();
    if (as_json) {
      std::cout << json{{"status", s.ok() ? "SERVING" : "NOT_SERVING"}}.dump()
                << "\n";
    } else {
      std::cout << (s.ok() ? "SERVING" : "NOT_SERVING") << "\n";
    }
    return s.ok() ? 0 : Fail(s);
  }

  if (*put) {
    v1::Dataset d;
    d.set_name(name);
    d.mutable_class_counts()->Assign(put_flags.counts.begin(),
                                     put_flags.counts.end());
    for (const std::string& n : names) d.add_class_names(n);
    absl::StatusOr<v1::LossConfig> config = ConfigFrom(put_flags, put);
    if (!config.ok()) return Fail(config.status());
    *d.mutable_defaults() = *config;
    absl::optional<uint64_t> expected;
    if (put->count("--expected-version")) expected = expected_version;
    absl::StatusOr<v1::Dataset> stored = client.PutDataset(d, expected);
    if (!stored.ok()) return Fail(stored.status());
    return ShowDataset(*stored, as_json);
  }
  if (*get) {
    absl::StatusOr<v1::Dataset> d = client.GetDataset(name);
    if (!d.ok()) return Fail(d.status());
    return ShowDataset(*d, as_json);
  }
  if (*list) {
    absl::StatusOr<std::vector<v1::Dataset>> all = client.ListDatasets();
    if (!all.ok()) return Fail(all.status());
    if (as_json) {
      json j = json::array();
      for (const v1::Dataset& d : *all) j.push_back(DatasetJson(d));
      std::cout << json{{"datasets", j}}.dump() << "\n";
    } else {
      std::cout << absl::StrFormat("%-32s %8s %8s  %s\n", "name", "version",
                                   "classes", "defaults");
      for (const v1::Dataset& d : *all) {
        std::cout << absl::StrFormat("%-32s %8d %8d  %s\n", d.name(),
                                     d.version(), d.class_counts_size(),
                                     ConfigText(d.defaults()));
      }
    }
    return 0;
  }
  if (*del) {
    absl::optional<uint64_t> expected;
    if (del->count("--expected-version")) expected = expected_version;
    absl::Status s = client.DeleteDataset(name, expected);
    if (!s.ok()) return Fail(s);
    if (as_json)
      std::cout << json{{"deleted", name}}.dump() << "\n";
    else
      std::cout << "deleted " << name << "\n";
    return 0;
  }
  if (*add) {
    std::vector<int32_t> labels;
    if (*labels_opt) {
      absl::StatusOr<std::vector<int32_t>> l = LoadLabels(add_labels);
      if (!l.ok()) return Fail(l.status());
      labels = *std::move(l);
    }
    absl::StatusOr<v1::Dataset> d = client.AddClassCounts(name, deltas, labels);
    if (!d.ok()) return Fail(d.status());
    return ShowDataset(*d, as_json);
  }

  auto source_of = [](const LossFlags& f) {
    return f.dataset.empty() ? LossSource::Counts(f.counts)
                             : LossSource::Dataset(f.dataset);
  };

  if (*weights) {
    if (weights_flags.dataset.empty() && weights_flags.counts.empty()) {
      return Fail(absl::InvalidArgumentError("give --dataset or --counts"));
    }
    absl::StatusOr<v1::LossConfig> config = ConfigFrom(weights_flags, weights);
    if (!config.ok()) return Fail(config.status());
    absl::StatusOr<v1::ClassWeights> w =
        client.GetClassWeights(source_of(weights_flags), *config);
    if (!w.ok()) return Fail(w.status());
    if (as_json) {
      json j{{"weights",
              std::vector<double>(w->weights().begin(), w->weights().end())}};
      if (w->dataset_version()) j["dataset_version"] = w->dataset_version();
      std::cout << j.dump() << "\n";
    } else {
      std::cout << absl::StrFormat("%6s %14s\n", "class", "weight");
      for (int j = 0; j < w->weights_size(); ++j) {
        std::cout << absl::StrFormat("%6d %14.8f\n", j, w->weights(j));
      }
    }
    return 0;
  }

  if (*loss) {
    if (loss_flags.dataset.empty() && loss_flags.counts.empty()) {
      return Fail(absl::InvalidArgumentError("give --dataset or --counts"));
    }
    absl::StatusOr<v1::LossConfig> config = ConfigFrom(loss_flags, loss);
    if (!config.ok()) return Fail(config.status());
    absl::StatusOr<LogitsMatrix> z = LoadLogits(logits_path);
    if (!z.ok()) return Fail(z.status());
    std::vector<int32_t> labels;
    std::vector<float> targets, sample_weights;
    if (*l_opt) {
      absl::StatusOr<std::vector<int32_t>> l = LoadLabels(labels_arg);
      if (!l.ok()) return Fail(l.status());
      labels = *std::move(l);
    } else {
      absl::StatusOr<std::vector<float>> t =
          LoadFloatMatrix(targets_path, z->rows, z->cols);
      if (!t.ok()) return Fail(t.status());
      targets = *std::move(t);
    }
    if (!sample_weights_arg.empty()) {
      absl::StatusOr<std::vector<float>> s = LoadFloats(sample_weights_arg);
      if (!s.ok()) return Fail(s.status());
      sample_weights = *std::move(s);
    }
    LossOptions lo;
    lo.config = *config;
    lo.sample_weights = sample_weights;
    lo.want_gradient = !gradient_out.empty();
    lo.want_per_sample_losses = per_sample;
    if (Given(loss, "--epoch")) lo.epoch = epoch;
    if (!gradient_dtype_arg.empty()) {
      absl::StatusOr<v1::DType> d = ParseDType(gradient_dtype_arg);
      if (!d.ok()) return Fail(d.status());
      lo.gradient_dtype = *d;
    }
    const Logits logits =
        z->float16 ? Logits::Half(v1::DTYPE_FLOAT16, z->f16, z->rows, z->cols)
                   : Logits::Float32(z->f32, z->rows, z->cols);
    const Target target =
        labels.empty() && !targets.empty() ? Targets(targets) : Labels(labels);
    absl::StatusOr<LossResult> r =
        client.ComputeLoss(source_of(loss_flags), logits, target, lo);
    if (!r.ok()) return Fail(r.status());
    if (!gradient_out.empty()) {
      // float16 goes to .npy as float16; bfloat16 (which NumPy lacks) and
      // CSV as the float32 values of the rounded gradient.
      absl::Status s;
      if (lo.gradient_dtype == v1::DTYPE_FLOAT16 &&
          !absl::EndsWithIgnoreCase(gradient_out, ".csv")) {
        s = WriteFloat16Npy(gradient_out, r->gradient_half, z->rows, z->cols);
      } else if (!r->gradient_half.empty()) {
        std::vector<float> decoded(r->gradient_half.size());
        DecodeHalf(lo.gradient_dtype == v1::DTYPE_FLOAT16 ? DType::kFloat16
                                                          : DType::kBFloat16,
                   r->gradient_half, absl::MakeSpan(decoded));
        s = WriteMatrix(gradient_out, decoded, z->rows, z->cols);
      } else {
        s = WriteMatrix(gradient_out, r->gradient, z->rows, z->cols);
      }
      if (!s.ok()) return Fail(s);
    }
    if (as_json) {
      json j{{"loss", r->loss},
             {"num_samples", r->num_samples},
             {"class_weights", r->class_weights},
             {"resolved_config", ProtoJson(r->resolved_config)}};
      if (r->dataset_version) j["dataset_version"] = r->dataset_version;
      if (!r->per_sample_losses.empty())
        j["per_sample_losses"] = r->per_sample_losses;
      if (!gradient_out.empty()) j["gradient_out"] = gradient_out;
      std::cout << j.dump() << "\n";
    } else {
      std::cout << absl::StrFormat("loss         %.9g\n", r->loss)
                << "num_samples  " << r->num_samples << "\n"
                << "config       " << ConfigText(r->resolved_config) << "\n";
      if (!r->per_sample_losses.empty()) {
        std::cout << "per_sample   " << absl::StrJoin(r->per_sample_losses, " ")
                  << "\n";
      }
      if (!gradient_out.empty())
        std::cout << "gradient     written to " << gradient_out << "\n";
    }
    return 0;
  }

  if (*bench) {
    bench_options.duration = absl::Seconds(duration_s);
    if (Given(&app, "--timeout"))
      bench_options.call_deadline = absl::Seconds(timeout_s);
    bench_options.dataset = bench_flags.dataset;
    bench_options.counts = bench_flags.counts;
    absl::StatusOr<v1::DType> d = ParseDType(bench_dtype);
    if (!d.ok()) return Fail(d.status());
    bench_options.dtype = *d;
    if (!bench_loss.empty()) {
      absl::StatusOr<v1::LossType> t = ParseLossType(bench_loss);
      if (!t.ok()) return Fail(t.status());
      bench_options.loss = *t;
    }
    absl::StatusOr<BenchReport> r = RunBench(&client, bench_options);
    if (!r.ok()) return Fail(r.status());
    if (as_json) {
      std::cout << json{{"requests", r->requests},
                        {"errors", r->errors},
                        {"seconds", r->seconds},
                        {"rps", r->rps},
                        {"p50_us", r->p50_us},
                        {"p90_us", r->p90_us},
                        {"p99_us", r->p99_us},
                        {"error_samples", r->error_samples}}
                       .dump()
                << "\n";
    } else {
      std::cout << absl::StrFormat(
          "requests %d  errors %d  %.1f req/s  p50 %.0f us  p90 %.0f us  p99 "
          "%.0f us\n",
          r->requests, r->errors, r->rps, r->p50_us, r->p90_us, r->p99_us);
      for (const std::string& e : r->error_samples)
        std::cout << "  error: " << e << "\n";
    }
    return 0;
  }
  return 0;
}

}  // namespace cbloss::cli

int main(int argc, char** argv) { return cbloss::cli::Main(argc, argv); }
