// Copyright 2026 The cbloss Authors.
//
// Shared memory through the C++ client (API.md section 5.3):
// SharedMemoryBuffer and the Client's region RPCs against the real
// cbloss-server, reached over a Unix domain socket (--listen=unix:...) with
// --allow_shared_memory. A call over shared memory must give exactly the
// bytes path's results (same loss, bit-identical gradient); the seed
// example is also checked against its float64 reference
// (tests/golden/seed_example.json, LOSS.md section 7 tolerances).

#include "cbloss/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/server_process.h"
#include "cbloss/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cbloss::client {
namespace {

using ::cbloss::testing::ServerProcess;
using ::testing::HasSubstr;
using json = nlohmann::json;

constexpr double kSeedLoss = 1.9582863;

struct Batch {
  std::vector<float> logits;
  std::vector<int32_t> labels;
  std::vector<int64_t> counts;
  int64_t rows = 0, cols = 0;
};

Batch SeedBatch() {
  const json seed = json::parse(std::ifstream(CBLOSS_SEED_EXAMPLE));
  Batch b;
  for (const json& row : seed.at("logits")) {
    for (const json& v : row) b.logits.push_back(v.get<float>());
    b.cols = static_cast<int64_t>(row.size());
    ++b.rows;
  }
  b.labels = seed.at("labels").get<std::vector<int32_t>>();
  b.counts = seed.at("class_counts").get<std::vector<int64_t>>();
  return b;
}

// The float64 reference gradient of the seed example (golden_cases.json).
std::vector<double> SeedReferenceGradient() {
  const json golden = json::parse(std::ifstream(CBLOSS_GOLDEN_CASES));
  for (const json& c : golden.at("cases")) {
    if (c.at("name") == "seed_example") {
      return c.at("expected").at("gradient").get<std::vector<double>>();
    }
  }
  ADD_FAILURE() << "no golden case seed_example";
  return {};
}

Batch RandomBatch(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> z(0.0f, 3.0f);
  std::uniform_int_distribution<int32_t> label(0,
                                               static_cast<int32_t>(cols) - 1);
  Batch b;
  b.rows = rows;
  b.cols = cols;
  for (int64_t i = 0; i < rows * cols; ++i) b.logits.push_back(z(rng));
  for (int64_t i = 0; i < rows; ++i) b.labels.push_back(label(rng));
  for (int64_t j = 0; j < cols; ++j) b.counts.push_back(1 + 1000 / (j + 1));
  return b;
}

v1::LossConfig FocalConfig() {
  v1::LossConfig c;
  c.set_loss_type(v1::LOSS_TYPE_FOCAL);
  c.set_beta(0.9999);
  c.set_gamma(2.0);
  c.set_reduction(v1::REDUCTION_MEAN);
  return c;
}

// bfloat16 bits of a float, rounded to nearest even (as the service rounds
// 16-bit logits it is given; here only to make 16-bit inputs).
uint16_t ToBFloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

// Entries of /dev/shm made by this process's SharedMemoryBuffers.
int ObjectsOfThisProcess() {
  const std::string prefix = absl::StrCat("cbloss-", getpid(), "-");
  int n = 0;
  std::error_code ignored;
  for (const auto& entry :
       std::filesystem::directory_iterator("/dev/shm", ignored)) {
    if (absl::StartsWith(entry.path().filename().string(), prefix)) ++n;
  }
  return n;
}

class SharedMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer({"--allow_shared_memory"}); }

  void StartServer(std::vector<std::string> flags) {
    flags.push_back("--listen=unix:" + socket_path());
    absl::Status started = server_.Start(flags);
    ASSERT_TRUE(started.ok()) << started << "\n" << server_.Log();
    client_ = Connect("unix:" + socket_path());
    ASSERT_NE(client_, nullptr);
  }

  std::unique_ptr<Client> Connect(const std::string& target) {
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Create(target);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "---- server log ----\n" << server_.Log();
  }

  std::string socket_path() const { return server_.dir() + "/cbloss.sock"; }

  std::unique_ptr<SharedMemoryBuffer> NewBuffer(
      int64_t rows, int64_t cols,
      const SharedMemoryBufferOptions& options = {}) {
    absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> buffer =
        SharedMemoryBuffer::Create(client_.get(), rows, cols, options);
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    return buffer.ok() ? *std::move(buffer) : nullptr;
  }

  // The same call as bytes and over `buffer`; everything must be equal, the
  // gradient bit for bit.
  void ExpectSameAsBytes(const Batch& b, SharedMemoryBuffer* buffer,
                         LossOptions options) {
    options.want_per_sample_losses = true;
    const LossSource source = LossSource::Counts(b.counts);
    absl::StatusOr<LossResult> bytes =
        client_->ComputeLoss(source, Logits::Float32(b.logits, b.rows, b.cols),
                             Labels(b.labels), options);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    std::copy(b.logits.begin(), b.logits.end(), buffer->logits().begin());
    absl::StatusOr<LossResult> shm =
        buffer->ComputeLoss(source, b.rows, b.cols, Labels(b.labels), options);
    ASSERT_TRUE(shm.ok()) << shm.status();
    EXPECT_EQ(shm->loss, bytes->loss);
    EXPECT_EQ(shm->num_samples, bytes->num_samples);
    EXPECT_EQ(shm->per_sample_losses, bytes->per_sample_losses);
    EXPECT_EQ(shm->class_weights, bytes->class_weights);
    EXPECT_TRUE(shm->gradient.empty() && shm->gradient_half.empty())
        << "the gradient is in the buffer, not in the result";
    const size_t n = static_cast<size_t>(b.rows * b.cols);
    if (options.gradient_dtype == v1::DTYPE_FLOAT32) {
      ASSERT_EQ(bytes->gradient.size(), n);
      EXPECT_EQ(std::memcmp(buffer->gradient().data(), bytes->gradient.data(),
                            n * sizeof(float)),
                0);
    } else {
      ASSERT_EQ(bytes->gradient_half.size(), n);
      EXPECT_EQ(std::memcmp(buffer->gradient_half().data(),
                            bytes->gradient_half.data(), n * sizeof(uint16_t)),
                0);
    }
  }

  ServerProcess server_;
  std::unique_ptr<Client> client_;
};

TEST_F(SharedMemoryTest, SeedExampleMatchesItsReferenceAndTheBytesPath) {
  const Batch b = SeedBatch();
  std::unique_ptr<SharedMemoryBuffer> buffer = NewBuffer(b.rows, b.cols);
  ASSERT_NE(buffer, nullptr);
  LossOptions options;
  options.config = FocalConfig();
  ExpectSameAsBytes(b, buffer.get(), options);
  // And against the float64 reference (LOSS.md section 7).
  absl::StatusOr<LossResult> r = buffer->ComputeLoss(
      LossSource::Counts(b.counts), b.rows, b.cols, Labels(b.labels), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->loss, kSeedLoss, 1e-5);
  const std::vector<double> ref = SeedReferenceGradient();
  ASSERT_EQ(ref.size(), static_cast<size_t>(b.rows * b.cols));
  double max_ref = 0;
  for (double g : ref) max_ref = std::max(max_ref, std::abs(g));
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_LE(std::abs(buffer->gradient()[i] - ref[i]), 1e-5 * max_ref + 1e-7)
        << "gradient[" << i << "]";
  }
}

TEST_F(SharedMemoryTest, EveryGradientDtypeIsBitIdenticalToTheBytesPath) {
  const Batch b = RandomBatch(64, 37, 7);
  std::unique_ptr<SharedMemoryBuffer> buffer = NewBuffer(64, 37);
  ASSERT_NE(buffer, nullptr);
  for (v1::DType dtype :
       {v1::DTYPE_FLOAT32, v1::DTYPE_FLOAT16, v1::DTYPE_BFLOAT16}) {
    for (v1::LossType loss :
         {v1::LOSS_TYPE_SOFTMAX, v1::LOSS_TYPE_FOCAL, v1::LOSS_TYPE_SIGMOID}) {
      SCOPED_TRACE(
          absl::StrCat(v1::DType_Name(dtype), " ", v1::LossType_Name(loss)));
      LossOptions options;
      options.config.set_loss_type(loss);
      options.gradient_dtype = dtype;
      ExpectSameAsBytes(b, buffer.get(), options);
    }
  }
}

TEST_F(SharedMemoryTest, SmallerBatchesUseTheStartOfTheBuffer) {
  std::unique_ptr<SharedMemoryBuffer> buffer = NewBuffer(64, 37);
  ASSERT_NE(buffer, nullptr);
  LossOptions options;
  options.config = FocalConfig();
  ExpectSameAsBytes(RandomBatch(5, 37, 11), buffer.get(), options);
  ExpectSameAsBytes(RandomBatch(64, 20, 12), buffer.get(), options);
  absl::StatusOr<LossResult> too_big =
      buffer->ComputeLoss(LossSource::Counts(std::vector<int64_t>(38, 5)), 64,
                          38, Labels(std::vector<int32_t>(64, 0)), options);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.status().message(), HasSubstr("does not fit"));
}

TEST_F(SharedMemoryTest, BFloat16LogitsMatchTheBytesPath) {
  const Batch b = RandomBatch(16, 9, 3);
  std::vector<uint16_t> bits;
  for (float f : b.logits) bits.push_back(ToBFloat16(f));
  SharedMemoryBufferOptions buffer_options;
  buffer_options.logits_dtype = v1::DTYPE_BFLOAT16;
  std::unique_ptr<SharedMemoryBuffer> buffer = NewBuffer(16, 9, buffer_options);
  ASSERT_NE(buffer, nullptr);
  EXPECT_TRUE(buffer->logits().empty());
  ASSERT_EQ(buffer->logits_half().size(), bits.size());
  std::copy(bits.begin(), bits.end(), buffer->logits_half().begin());
  LossOptions options;
  options.gradient_dtype = v1::DTYPE_BFLOAT16;
  const LossSource source = LossSource::Counts(b.counts);
  absl::StatusOr<LossResult> bytes = client_->ComputeLoss(
      source, Logits::Half(v1::DTYPE_BFLOAT16, bits, 16, 9), Labels(b.labels),
      options);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<LossResult> shm =
      buffer->ComputeLoss(source, 16, 9, Labels(b.labels), options);
  ASSERT_TRUE(shm.ok()) << shm.status();
  EXPECT_EQ(shm->loss, bytes->loss);
  ASSERT_EQ(bytes->gradient_half.size(), bits.size());
  EXPECT_EQ(std::memcmp(buffer->gradient_half().data(),
                        bytes->gradient_half.data(), bits.size() * 2),
            0);
}

TEST_F(SharedMemoryTest, RegionIsListedUnlinkedAndUnregisteredByTheDestructor) {
  std::unique_ptr<SharedMemoryBuffer> buffer = NewBuffer(10, 5);
  ASSERT_NE(buffer, nullptr);
  EXPECT_EQ(buffer->region(), buffer->key().substr(1));
  EXPECT_TRUE(
      absl::StartsWith(buffer->key(), absl::StrCat("/cbloss-", getpid(), "-")))
      << buffer->key();
  absl::StatusOr<std::vector<v1::SharedMemoryRegion>> listed =
      client_->ListSharedMemory();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name(), buffer->region());
  EXPECT_EQ((*listed)[0].key(), buffer->key());
  EXPECT_EQ((*listed)[0].offset(), 0u);
  EXPECT_EQ((*listed)[0].byte_size(), buffer->byte_size());
  // 50 float32 logits, the gradient on the next 64-byte boundary.
  EXPECT_EQ(buffer->byte_size(), 256u + 200u);
  // Unlinked right after registering: nothing is left in /dev/shm.
  errno = 0;
  EXPECT_LT(shm_open(buffer->key().c_str(), O_RDONLY, 0), 0);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(ObjectsOfThisProcess(), 0);

  buffer.reset();
  listed = client_->ListSharedMemory();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->empty()) << (*listed)[0].name();
}

TEST_F(SharedMemoryTest, ClientRegionCallsAndReferences) {
  // A region of the caller's own, used through Logits::SharedMemory and
  // LossOptions::gradient_shm directly.
  const Batch b = SeedBatch();
  const std::string key = absl::StrCat("/cbloss-", getpid(), "-manual");
  const int fd = shm_open(key.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const size_t size = 4096;
  ASSERT_EQ(ftruncate(fd, size), 0);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  close(fd);
  char* base = static_cast<char*>(p);
  absl::StatusOr<v1::SharedMemoryRegion> region =
      client_->RegisterSharedMemory("manual", key, 0, size);
  shm_unlink(key.c_str());
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_EQ(region->name(), "manual");
  EXPECT_EQ(region->byte_size(), size);
  absl::StatusOr<v1::SharedMemoryRegion> again =
      client_->RegisterSharedMemory("manual", key, 0, size);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);

  const size_t n = b.logits.size();
  std::memcpy(base, b.logits.data(), n * sizeof(float));
  v1::SharedMemoryRef logits_ref, gradient_ref;
  logits_ref.set_region("manual");
  logits_ref.set_byte_size(n * sizeof(float));
  gradient_ref.set_region("manual");
  gradient_ref.set_offset(1024);
  gradient_ref.set_byte_size(n * sizeof(float));
  LossOptions options;
  options.config = FocalConfig();
  options.want_gradient = false;  // implied by gradient_shm
  options.gradient_shm = gradient_ref;
  absl::StatusOr<LossResult> r = client_->ComputeLoss(
      LossSource::Counts(b.counts),
      Logits::SharedMemory(logits_ref, v1::DTYPE_FLOAT32, b.rows, b.cols),
      Labels(b.labels), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->loss, kSeedLoss, 1e-5);
  EXPECT_TRUE(r->gradient.empty());
  const std::vector<double> ref = SeedReferenceGradient();
  const float* g = reinterpret_cast<const float*>(base + 1024);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_NEAR(g[i], ref[i], 1e-6) << "gradient[" << i << "]";
  }

  EXPECT_TRUE(client_->UnregisterSharedMemory("manual").ok());
  EXPECT_EQ(client_->UnregisterSharedMemory("manual").code(),
            absl::StatusCode::kNotFound);
  r = client_->ComputeLoss(
      LossSource::Counts(b.counts),
      Logits::SharedMemory(logits_ref, v1::DTYPE_FLOAT32, b.rows, b.cols),
      Labels(b.labels), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("'manual'"));
  munmap(p, size);
}

TEST_F(SharedMemoryTest, RegistersAgainAfterAServerRestart) {
  const Batch b = SeedBatch();
  std::unique_ptr<SharedMemoryBuffer> buffer = NewBuffer(b.rows, b.cols);
  ASSERT_NE(buffer, nullptr);
  std::copy(b.logits.begin(), b.logits.end(), buffer->logits().begin());
  float* const logits_before = buffer->logits().data();
  const std::string region_before = buffer->region();
  LossOptions options;
  options.config = FocalConfig();
  absl::StatusOr<LossResult> first = buffer->ComputeLoss(
      LossSource::Counts(b.counts), b.rows, b.cols, Labels(b.labels), options);
  ASSERT_TRUE(first.ok()) << first.status();

  server_.Stop();
  absl::Status restarted = server_.Start(
      {"--allow_shared_memory", "--listen=unix:" + socket_path()});
  ASSERT_TRUE(restarted.ok()) << restarted;
  // The channel reconnects (after its back-off) before the region question
  // arises.
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (!client_->CheckHealth().ok() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  // The new server knows no region: the buffer registers a fresh object with
  // the same contents at the same address, once, and sends again.
  absl::StatusOr<LossResult> second = buffer->ComputeLoss(
      LossSource::Counts(b.counts), b.rows, b.cols, Labels(b.labels), options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->loss, first->loss);
  EXPECT_NE(buffer->region(), region_before);
  EXPECT_EQ(buffer->logits().data(), logits_before);
  EXPECT_EQ(std::memcmp(buffer->logits().data(), b.logits.data(),
                        b.logits.size() * sizeof(float)),
            0);
  absl::StatusOr<std::vector<v1::SharedMemoryRegion>> listed =
      client_->ListSharedMemory();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name(), buffer->region());
  EXPECT_EQ(ObjectsOfThisProcess(), 0);
}

TEST_F(SharedMemoryTest, UnixTargetServesEveryOtherCall) {
  EXPECT_TRUE(client_->CheckHealth().ok());
  v1::Dataset d;
  d.set_name("over-unix");
  for (int64_t n : {5, 3, 2}) d.add_class_counts(n);
  absl::StatusOr<v1::Dataset> put = client_->PutDataset(d);
  ASSERT_TRUE(put.ok()) << put.status();
  absl::StatusOr<v1::Dataset> got = client_->GetDataset("over-unix");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->version(), 1u);
}

TEST_F(SharedMemoryTest, RefusedOverTcp) {
  std::unique_ptr<Client> tcp = Connect(server_.target());
  ASSERT_NE(tcp, nullptr);
  absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> buffer =
      SharedMemoryBuffer::Create(tcp.get(), 4, 4);
  EXPECT_EQ(buffer.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(buffer.status().message(),
            "shared memory needs a Unix domain socket connection (a unix: "
            "target)");
  EXPECT_EQ(ObjectsOfThisProcess(), 0) << "a refused object is unlinked";
}

TEST_F(SharedMemoryTest, RefusedByAServerWithSharedMemoryOff) {
  server_.Stop();
  StartServer({});
  absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> buffer =
      SharedMemoryBuffer::Create(client_.get(), 4, 4);
  EXPECT_EQ(buffer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(buffer.status().message(),
            "shared memory is off on this server (start it with "
            "--allow_shared_memory)");
  EXPECT_EQ(ObjectsOfThisProcess(), 0);
  // The socket itself serves as usual.
  EXPECT_TRUE(client_->CheckHealth().ok());
}

TEST_F(SharedMemoryTest, BadArgumentsAreInvalidArgument) {
  SharedMemoryBufferOptions bad_dtype;
  bad_dtype.logits_dtype = static_cast<v1::DType>(7);  // no such dtype
  SharedMemoryBufferOptions bad_prefix;
  bad_prefix.key_prefix = "cbloss-";
  for (auto [rows, cols, options] :
       {std::make_tuple(0, 5, SharedMemoryBufferOptions()),
        std::make_tuple(5, -1, SharedMemoryBufferOptions()),
        std::make_tuple(5, 5, bad_dtype), std::make_tuple(5, 5, bad_prefix)}) {
    absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> buffer =
        SharedMemoryBuffer::Create(client_.get(), rows, cols, options);
    EXPECT_EQ(buffer.status().code(), absl::StatusCode::kInvalidArgument)
        << rows << " " << cols;
  }
  std::unique_ptr<SharedMemoryBuffer> buffer = NewBuffer(2, 2);
  ASSERT_NE(buffer, nullptr);
  std::vector<float> out(4);
  LossOptions options;
  options.gradient_out = absl::MakeSpan(out);
  absl::StatusOr<LossResult> r =
      buffer->ComputeLoss(LossSource::Counts({1, 1}), 2, 2,
                          Labels(std::vector<int32_t>{0, 1}), options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SharedMemoryRequest, ReferencesGoOnTheWire) {
  v1::SharedMemoryRef logits_ref, gradient_ref;
  logits_ref.set_region("r");
  logits_ref.set_byte_size(24);
  gradient_ref.set_region("r");
  gradient_ref.set_offset(64);
  gradient_ref.set_byte_size(12);
  LossOptions options;
  options.want_gradient = false;
  options.gradient_dtype = v1::DTYPE_FLOAT16;
  options.gradient_shm = gradient_ref;
  absl::StatusOr<v1::ComputeLossRequest> request = MakeComputeLossRequest(
      LossSource::Counts({1, 1, 1}),
      Logits::SharedMemory(logits_ref, v1::DTYPE_FLOAT32, 2, 3),
      Labels(std::vector<int32_t>{0, 2}), options);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->logits().dtype(), v1::DTYPE_FLOAT32);
  EXPECT_THAT(request->logits().shape(), ::testing::ElementsAre(2, 3));
  EXPECT_TRUE(request->logits().data().empty());
  EXPECT_EQ(request->logits().shm().region(), "r");
  EXPECT_EQ(request->logits().shm().byte_size(), 24u);
  EXPECT_EQ(request->gradient_shm().offset(), 64u);
  EXPECT_TRUE(request->want_gradient()) << "implied by gradient_shm";
  EXPECT_EQ(request->gradient_dtype(), v1::DTYPE_FLOAT16);

  std::vector<float> out(6);
  options.gradient_out = absl::MakeSpan(out);
  EXPECT_EQ(MakeComputeLossRequest(
                LossSource::Counts({1, 1, 1}),
                Logits::SharedMemory(logits_ref, v1::DTYPE_FLOAT32, 2, 3),
                Labels(std::vector<int32_t>{0, 2}), options)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cbloss::client
