// Copyright 2026 The cbloss Authors.

#include "server/run_registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "server/dataset_registry.h"
#include "server/loss_config.h"
#include "spdlog/spdlog.h"

namespace cbloss::server {
namespace {

constexpr int kLoadPageSize = 1000;

absl::Status RunNotFound(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat("run '", name, "' not found"));
}

// into += delta, element by element; `into`'s vectors get C entries when
// `delta`'s have them.
void AddInto(const RunUpdate& delta, RunUpdate* into) {
  auto add = [](const auto& from, auto* to) {
    if (from.empty()) return;
    if (to->empty()) to->assign(from.size(), 0);
    for (size_t j = 0; j < from.size(); ++j) (*to)[j] += from[j];
  };
  into->requests += delta.requests;
  add(delta.seen_counts, &into->seen_counts);
  into->background_seen += delta.background_seen;
  add(delta.positive_gradient, &into->positive_gradient);
  add(delta.negative_gradient, &into->negative_gradient);
  into->eqlv2_updates += delta.eqlv2_updates;
}

bool SizesFit(const RunUpdate& u, size_t classes) {
  auto fits = [classes](size_t n) { return n == 0 || n == classes; };
  return fits(u.seen_counts.size()) && fits(u.positive_gradient.size()) &&
         fits(u.negative_gradient.size());
}

}  // namespace

absl::Status ValidateRun(const v1::Run& run) {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(run.name(), "run.name"));
  if (!run.dataset().empty()) {
    CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(run.dataset(), "run.dataset"));
  }
  if (run.num_classes() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("run.num_classes = ", run.num_classes(), " is negative"));
  }
  if (run.dataset().empty() && run.num_classes() == 0) {
    return absl::InvalidArgumentError(
        "run.num_classes = 0: give run.dataset or run.num_classes >= 1");
  }
  return ValidateLossConfig(run.defaults(), "run.defaults");
}

struct RunRegistry::Entry {
  std::mutex mu;
  v1::Run base;                 // as last read from or written to the store
  RunUpdate inflight;           // being written by a flush (requests 0: none)
  RunUpdate pending;            // applied since, not yet being written
  int64_t pending_time_ns = 0;  // when `pending` last changed
  bool deleted = false;

  uint64_t version() const {
    return base.version() + static_cast<uint64_t>(inflight.requests) +
           static_cast<uint64_t>(pending.requests);
  }
};

namespace {

// base + inflight + pending of `e` (its lock held) as a Run message.
v1::Run RunAsSeen(const v1::Run& base, const RunUpdate& inflight,
                  const RunUpdate& pending, uint64_t version,
                  int64_t pending_time_ns) {
  v1::Run run = base;
  v1::RunStatistics* s = run.mutable_statistics();
  for (const RunUpdate* u : {&inflight, &pending}) {
    for (size_t j = 0; j < u->seen_counts.size(); ++j) {
      s->set_seen_counts(
          static_cast<int>(j),
          s->seen_counts(static_cast<int>(j)) + u->seen_counts[j]);
    }
    s->set_background_seen(s->background_seen() + u->background_seen);
    for (size_t j = 0; j < u->positive_gradient.size(); ++j) {
      s->set_positive_gradient(
          static_cast<int>(j),
          s->positive_gradient(static_cast<int>(j)) + u->positive_gradient[j]);
    }
    for (size_t j = 0; j < u->negative_gradient.size(); ++j) {
      s->set_negative_gradient(
          static_cast<int>(j),
          s->negative_gradient(static_cast<int>(j)) + u->negative_gradient[j]);
    }
    s->set_eqlv2_updates(s->eqlv2_updates() + u->eqlv2_updates);
  }
  if (version != base.version() && pending_time_ns > 0) {
    google::protobuf::Timestamp* t = run.mutable_update_time();
    t->set_seconds(pending_time_ns / 1000000000);
    t->set_nanos(static_cast<int32_t>(pending_time_ns % 1000000000));
  }
  run.set_version(version);
  return run;
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RunRegistry>> RunRegistry::Create(
    DatasetStore* store, Options options) {
  std::unique_ptr<RunRegistry> runs(new RunRegistry(store, options));
  {
    std::lock_guard<std::mutex> lock(runs->flush_mu_);
    CBLOSS_RETURN_IF_ERROR(runs->LoadAll());
  }
  runs->last_flush_end_ = std::chrono::steady_clock::now();
  runs->flusher_ = std::thread([r = runs.get()] { r->FlusherLoop(); });
  return runs;
}

RunRegistry::~RunRegistry() { Close(); }

absl::Status RunRegistry::LoadAll() {
  std::map<std::string, v1::Run, std::less<>> stored;
  std::string after;
  while (true) {
    absl::StatusOr<std::vector<v1::Run>> page =
        store_->ListRuns(after, kLoadPageSize, "");
    if (!page.ok()) return page.status();
    for (v1::Run& r : *page) {
      after = r.name();
      stored[after] = std::move(r);
    }
    if (static_cast<int>(page->size()) < kLoadPageSize) break;
  }
  std::lock_guard<std::shared_mutex> lock(mu_);
  for (auto it = runs_.begin(); it != runs_.end();) {
    if (stored.count(it->first) == 0) {
      const std::shared_ptr<Entry> gone = it->second;  // outlives the erase
      it = runs_.erase(it);
      std::lock_guard<std::mutex> entry_lock(gone->mu);
      gone->deleted = true;
    } else {
      ++it;
    }
  }
  for (auto& [name, run] : stored) {
    auto it = runs_.find(name);
    if (it == runs_.end()) {
      auto e = std::make_shared<Entry>();
      e->base = std::move(run);
      runs_.emplace(name, std::move(e));
    } else {
      std::lock_guard<std::mutex> entry_lock(it->second->mu);
      if (run.version() > it->second->base.version()) {
        it->second->base = std::move(run);
      }
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<RunRegistry::Entry> RunRegistry::Find(
    absl::string_view name) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = runs_.find(name);
  return it == runs_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<RunRegistry::Entry>> RunRegistry::FindOrLoad(
    absl::string_view name) {
  if (std::shared_ptr<Entry> e = Find(name)) return e;
  // Not known here: perhaps created by another replica whose notification
  // has not arrived yet. The store has the answer.
  absl::StatusOr<v1::Run> stored = store_->GetRun(name);
  if (!stored.ok()) return stored.status();
  auto fresh = std::make_shared<Entry>();
  fresh->base = *std::move(stored);
  std::lock_guard<std::shared_mutex> lock(mu_);
  // A concurrent load or notification may have installed it first.
  return runs_.emplace(std::string(name), std::move(fresh)).first->second;
}

void RunRegistry::Install(v1::Run stored) {
  std::lock_guard<std::shared_mutex> lock(mu_);
  auto it = runs_.find(stored.name());
  if (it != runs_.end()) {
    std::lock_guard<std::mutex> entry_lock(it->second->mu);
    if (stored.version() > it->second->base.version() ||
        stored.create_time().SerializeAsString() !=
            it->second->base.create_time().SerializeAsString()) {
      it->second->base = std::move(stored);
    }
    return;
  }
  auto e = std::make_shared<Entry>();
  std::string name = stored.name();
  e->base = std::move(stored);
  runs_.emplace(std::move(name), std::move(e));
}

void RunRegistry::Forget(absl::string_view name) {
  std::lock_guard<std::shared_mutex> lock(mu_);
  auto it = runs_.find(name);
  if (it == runs_.end()) return;
  // The map may hold the last reference: keep the entry alive past the
  // erase, then tell the requests that hold it that it is gone.
  const std::shared_ptr<Entry> gone = it->second;
  runs_.erase(it);
  std::lock_guard<std::mutex> entry_lock(gone->mu);
  gone->deleted = true;
}

absl::StatusOr<v1::Run> RunRegistry::Create(const v1::Run& run) {
  CBLOSS_RETURN_IF_ERROR(ValidateRun(run));
  std::lock_guard<std::mutex> lock(flush_mu_);
  absl::StatusOr<v1::Run> stored = store_->CreateRun(run);
  if (!stored.ok()) return stored.status();
  {
    // A deleted run of the same name may linger in the map (deleted by
    // another replica, not yet notified): the new record replaces it.
    Forget(stored->name());
  }
  Install(*stored);
  return stored;
}

absl::StatusOr<v1::Run> RunRegistry::Get(absl::string_view name,
                                         absl::string_view field) {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(name, field));
  absl::StatusOr<std::shared_ptr<Entry>> e = FindOrLoad(name);
  if (!e.ok()) return e.status();
  std::lock_guard<std::mutex> lock((*e)->mu);
  if ((*e)->deleted) return RunNotFound(name);
  return RunAsSeen((*e)->base, (*e)->inflight, (*e)->pending, (*e)->version(),
                   (*e)->pending_time_ns);
}

std::vector<v1::Run> RunRegistry::List(absl::string_view start_after, int limit,
                                       absl::string_view dataset) const {
  std::vector<v1::Run> out;
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (auto it = runs_.upper_bound(start_after);
       it != runs_.end() && static_cast<int>(out.size()) < limit; ++it) {
    Entry& e = *it->second;
    std::lock_guard<std::mutex> entry_lock(e.mu);
    if (!dataset.empty() && e.base.dataset() != dataset) continue;
    out.push_back(RunAsSeen(e.base, e.inflight, e.pending, e.version(),
                            e.pending_time_ns));
  }
  return out;
}

absl::Status RunRegistry::Delete(absl::string_view name,
                                 absl::optional<uint64_t> expected_version) {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(name, "name"));
  std::lock_guard<std::mutex> lock(flush_mu_);
  // The store's version must be the one callers have seen.
  CBLOSS_RETURN_IF_ERROR(FlushLocked());
  CBLOSS_RETURN_IF_ERROR(store_->DeleteRun(name, expected_version));
  Forget(name);
  return absl::OkStatus();
}

absl::StatusOr<RunView> RunRegistry::View(absl::string_view name,
                                          absl::string_view field) {
  CBLOSS_RETURN_IF_ERROR(ValidateDatasetName(name, field));
  absl::StatusOr<std::shared_ptr<Entry>> found = FindOrLoad(name);
  if (!found.ok()) return found.status();
  Entry& e = **found;
  RunView view;
  std::lock_guard<std::mutex> lock(e.mu);
  if (e.deleted) return RunNotFound(name);
  const v1::Run& b = e.base;
  const v1::RunStatistics& s = b.statistics();
  view.name = b.name();
  view.dataset = b.dataset();
  view.num_classes = b.num_classes();
  view.defaults = b.defaults();
  view.version = e.version();
  view.seen_counts.assign(s.seen_counts().begin(), s.seen_counts().end());
  view.background_seen = s.background_seen();
  view.positive_gradient.assign(s.positive_gradient().begin(),
                                s.positive_gradient().end());
  view.negative_gradient.assign(s.negative_gradient().begin(),
                                s.negative_gradient().end());
  view.eqlv2_updates = s.eqlv2_updates();
  const size_t C = static_cast<size_t>(view.num_classes);
  view.seen_counts.resize(C, 0);
  view.positive_gradient.resize(C, 0.0);
  view.negative_gradient.resize(C, 0.0);
  for (const RunUpdate* u : {&e.inflight, &e.pending}) {
    for (size_t j = 0; j < u->seen_counts.size() && j < C; ++j) {
      view.seen_counts[j] += u->seen_counts[j];
    }
    view.background_seen += u->background_seen;
    for (size_t j = 0; j < u->positive_gradient.size() && j < C; ++j) {
      view.positive_gradient[j] += u->positive_gradient[j];
    }
    for (size_t j = 0; j < u->negative_gradient.size() && j < C; ++j) {
      view.negative_gradient[j] += u->negative_gradient[j];
    }
    view.eqlv2_updates += u->eqlv2_updates;
  }
  return view;
}

absl::StatusOr<uint64_t> RunRegistry::Accumulate(
    const RunUpdate& update, std::chrono::system_clock::time_point deadline) {
  absl::StatusOr<std::shared_ptr<Entry>> found = FindOrLoad(update.name);
  if (!found.ok()) return found.status();
  Entry& e = **found;
  uint64_t seq = 0;
  uint64_t version = 0;
  {
    std::shared_lock<std::shared_mutex> apply(apply_mu_);
    if (closing_) {
      return absl::UnavailableError(
          "the server is stopping: the update was not applied");
    }
    std::lock_guard<std::mutex> lock(e.mu);
    if (e.deleted) return RunNotFound(update.name);
    if (!SizesFit(update, static_cast<size_t>(e.base.num_classes()))) {
      return absl::AbortedError(absl::StrCat(
          "run '", update.name,
          "' was replaced while this request was computed; nothing was "
          "applied"));
    }
    AddInto(update, &e.pending);
    e.pending_time_ns = NowNanos();
    version = e.version();
    seq = applied_seq_.fetch_add(1) + 1;
  }
  // Back-pressure: acknowledge at once while commits keep up; wait for the
  // commit that makes this update durable when they are late.
  std::unique_lock<std::mutex> lock(durable_mu_);
  if (flushed_seq_ >= seq ||
      std::chrono::steady_clock::now() - last_flush_end_ <=
          options_.max_flush_lag) {
    return version;
  }
  const auto until = std::min(
      deadline, std::chrono::system_clock::now() + options_.max_flush_wait);
  const bool durable = durable_cv_.wait_until(
      lock, until, [&] { return flushed_seq_ >= seq || closed_; });
  if (!durable) {
    return absl::UnavailableError(absl::StrCat(
        "run '", update.name,
        "': the store is late writing run statistics; this update is "
        "applied (version ",
        version, ") but not yet durable"));
  }
  return version;
}

absl::Status RunRegistry::FlushLocked() {
  std::vector<std::shared_ptr<Entry>> entries;
  std::vector<RunUpdate> updates;
  uint64_t target = 0;
  {
    std::lock_guard<std::shared_mutex> apply(apply_mu_);
    target = applied_seq_.load();
    std::shared_lock<std::shared_mutex> map_lock(mu_);
    for (const auto& [name, e] : runs_) {
      std::lock_guard<std::mutex> entry_lock(e->mu);
      if (e->pending.requests == 0) continue;
      e->inflight = std::move(e->pending);
      e->pending = RunUpdate();
      e->inflight.name = name;
      updates.push_back(e->inflight);
      entries.push_back(e);
    }
  }
  if (!updates.empty()) {
    absl::StatusOr<std::vector<absl::StatusOr<v1::Run>>> results =
        store_->ApplyRunUpdates(updates);
    if (!results.ok()) {
      // Nothing was written: the deltas wait for the next flush.
      for (const std::shared_ptr<Entry>& e : entries) {
        std::lock_guard<std::mutex> entry_lock(e->mu);
        RunUpdate merged = std::move(e->inflight);
        AddInto(e->pending, &merged);
        e->pending = std::move(merged);
        e->inflight = RunUpdate();
      }
      return results.status();
    }
    std::vector<size_t> gone;  // indexes of runs deleted meanwhile
    for (size_t i = 0; i < entries.size(); ++i) {
      Entry& e = *entries[i];
      absl::StatusOr<v1::Run>& r = (*results)[i];
      std::lock_guard<std::mutex> entry_lock(e.mu);
      if (r.ok()) {
        e.base = *std::move(r);
      } else if (r.status().code() == absl::StatusCode::kNotFound) {
        e.deleted = true;  // deleted by another replica meanwhile
        gone.push_back(i);
      } else {
        spdlog::error(
            "run '{}': {} accumulated updates could not be written "
            "and are dropped: {}",
            updates[i].name, updates[i].requests, r.status().ToString());
      }
      e.inflight = RunUpdate();
    }
    if (!gone.empty()) {
      std::lock_guard<std::shared_mutex> map_lock(mu_);
      for (size_t i : gone) {
        // Unless a new run of the same name has replaced it meanwhile.
        auto it = runs_.find(updates[i].name);
        if (it != runs_.end() && it->second == entries[i]) runs_.erase(it);
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(durable_mu_);
    flushed_seq_ = std::max(flushed_seq_, target);
    last_flush_end_ = std::chrono::steady_clock::now();
  }
  durable_cv_.notify_all();
  return absl::OkStatus();
}

absl::Status RunRegistry::Flush() {
  std::lock_guard<std::mutex> lock(flush_mu_);
  return FlushLocked();
}

void RunRegistry::FlusherLoop() {
  bool failing = false;
  std::unique_lock<std::mutex> lock(durable_mu_);
  while (!closed_) {
    durable_cv_.wait_for(lock, options_.flush_interval);
    if (closed_) break;
    lock.unlock();
    absl::Status s = Flush();
    if (!s.ok() && !failing) {
      spdlog::warn("cannot write run statistics (will retry): {}",
                   s.ToString());
    } else if (s.ok() && failing) {
      spdlog::info("run statistics written again");
    }
    failing = !s.ok();
    lock.lock();
  }
}

void RunRegistry::Close() {
  {
    std::lock_guard<std::shared_mutex> apply(apply_mu_);
    if (closing_) return;
    closing_ = true;
  }
  {
    std::lock_guard<std::mutex> lock(durable_mu_);
    closed_ = true;
  }
  durable_cv_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  // The last updates; a store that is down gets a few more chances.
  absl::Status s;
  for (int attempt = 0; attempt < 5; ++attempt) {
    s = Flush();
    if (s.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!s.ok()) {
    spdlog::error("{} accumulated run updates could not be written at stop: {}",
                  unflushed_updates(), s.ToString());
  }
}

int RunRegistry::size() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return static_cast<int>(runs_.size());
}

int64_t RunRegistry::unflushed_updates() const {
  const uint64_t applied = applied_seq_.load();
  std::lock_guard<std::mutex> lock(durable_mu_);
  return static_cast<int64_t>(applied - std::min(applied, flushed_seq_));
}

absl::Status RunRegistry::OnRunChanged(absl::string_view name) {
  std::lock_guard<std::mutex> lock(flush_mu_);
  absl::StatusOr<v1::Run> stored = store_->GetRun(name);
  if (stored.ok()) {
    Install(*std::move(stored));
    return absl::OkStatus();
  }
  if (stored.status().code() != absl::StatusCode::kNotFound) {
    return stored.status();
  }
  Forget(name);
  return absl::OkStatus();
}

absl::Status RunRegistry::OnResync() {
  std::lock_guard<std::mutex> lock(flush_mu_);
  return LoadAll();
}

}  // namespace cbloss::server
