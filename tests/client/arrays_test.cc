// Copyright 2026 The cbloss Authors.
//
// The CLI's file readers (client/cli/arrays.h) against files NumPy wrote:
// tests/client/fixtures/*.npy|csv come from fixtures/make_fixtures.py, and
// fixtures/expected.json records NumPy's own view of each file (dtype,
// shape, values, float16 bit patterns). No server.

#include "arrays.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace cbloss::cli {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  return std::string(CBLOSS_CLIENT_FIXTURES_DIR) + "/" + name;
}

const nlohmann::json& Expected() {
  static const nlohmann::json* expected = [] {
    std::ifstream in(Fixture("expected.json"));
    return new nlohmann::json(nlohmann::json::parse(in));
  }();
  return *expected;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/cbloss_arrays_test_" +
         std::to_string(::getpid()) + "_" + name;
}

// Exact float32 values NumPy recorded for `name`.
std::vector<float> ExpectedFloats(const std::string& name) {
  std::vector<float> out;
  for (const auto& v : Expected().at(name).at("values")) {
    out.push_back(static_cast<float>(v.get<double>()));
  }
  return out;
}

std::vector<int32_t> ExpectedInts(const std::string& name) {
  std::vector<int32_t> out;
  for (const auto& v : Expected().at(name).at("values")) {
    out.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return out;
}

// Bitwise float comparison (keeps -0.0 and subnormals honest).
std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

TEST(NpyLogits, Float32MatchesWhatNumpyWrote) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_f32.npy"));
  ASSERT_TRUE(m.ok()) << m.status();
  const nlohmann::json& e = Expected().at("logits_f32.npy");
  EXPECT_EQ(m->rows, e["shape"][0].get<int64_t>());
  EXPECT_EQ(m->cols, e["shape"][1].get<int64_t>());
  EXPECT_FALSE(m->float16);
  EXPECT_EQ(Bits(m->f32), Bits(ExpectedFloats("logits_f32.npy")));
}

TEST(NpyLogits, Float16KeepsNumpysBitPatterns) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_f16.npy"));
  ASSERT_TRUE(m.ok()) << m.status();
  const nlohmann::json& e = Expected().at("logits_f16.npy");
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 5);
  EXPECT_TRUE(m->float16);
  std::vector<uint16_t> bits;
  for (const auto& b : e.at("bits")) bits.push_back(b.get<uint16_t>());
  EXPECT_EQ(m->f16, bits);
}

TEST(NpyLogits, Version2HeaderIsRead) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_f32_v2.npy"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 3);
  EXPECT_EQ(Bits(m->f32), Bits(ExpectedFloats("logits_f32_v2.npy")));
}

TEST(NpyLogits, Float64IsRejectedNamingTheDtype) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_f64.npy"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("<f8"), HasSubstr("logits_f64.npy")));
}

TEST(NpyLogits, FortranOrderIsAClearError) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_fortran.npy"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("Fortran"));
}

TEST(NpyLogits, ThreeDimensionalIsARankError) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_3d.npy"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("2-D"), HasSubstr("(2, 3, 4)")));
}

TEST(NpyLogits, BigEndianIsRejected) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_f32_be.npy"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr(">f4"));
}

TEST(NpyLogits, TruncatedFileIsRejected) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits_truncated.npy"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  // 48 data bytes are needed, 45 are there.
  EXPECT_THAT(m.status().message(), AllOf(HasSubstr("45"), HasSubstr("48")));
}

TEST(NpyLogits, NotANpyFileIsRejected) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("not_npy.npy"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("not a .npy"));
}

TEST(NpyLogits, MissingFileIsNotFound) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("no_such_file.npy"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("no_such_file.npy"));
}

TEST(ParseNpy, HeaderFieldsOfEveryFixture) {
  for (const char* name :
       {"logits_f32.npy", "logits_f16.npy", "labels_i32.npy", "labels_i64.npy",
        "logits_f32_v2.npy", "weights_f32.npy"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<NpyArray> a = ReadNpy(Fixture(name));
    ASSERT_TRUE(a.ok()) << a.status();
    const nlohmann::json& e = Expected().at(name);
    EXPECT_EQ(a->descr, e.at("descr").get<std::string>());
    EXPECT_EQ(a->shape, e.at("shape").get<std::vector<int64_t>>());
  }
}

TEST(ParseNpy, ShortOrUnknownVersionInputs) {
  EXPECT_EQ(ParseNpy("", "empty").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseNpy(std::string("\x93NUMPY", 6), "magic only").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string bytes = ReadBytes(Fixture("logits_f32.npy"));
  bytes[6] = 9;  // format version 9.0
  absl::StatusOr<NpyArray> a = ParseNpy(bytes, "v9");
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("version 9"));
  // The header length points past the end of the file.
  std::string header_only = ReadBytes(Fixture("logits_f32.npy")).substr(0, 40);
  EXPECT_EQ(ParseNpy(header_only, "cut").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NpyLabels, Int32MatchesWhatNumpyWrote) {
  absl::StatusOr<std::vector<int32_t>> l =
      LoadLabels(Fixture("labels_i32.npy"));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(*l, ExpectedInts("labels_i32.npy"));
}

TEST(NpyLabels, Int64MatchesWhatNumpyWrote) {
  absl::StatusOr<std::vector<int32_t>> l =
      LoadLabels(Fixture("labels_i64.npy"));
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(*l, ExpectedInts("labels_i64.npy"));
}

TEST(NpyLabels, Int64OutsideInt32NamesTheIndex) {
  absl::StatusOr<std::vector<int32_t>> l =
      LoadLabels(Fixture("labels_i64_overflow.npy"));
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(l.status().message(), HasSubstr("labels[2] = 2147483648"));
}

TEST(CsvLabels, OutOfRangeOrNaNIsAnErrorNotUndefinedBehaviour) {
  // 3e10 and nan parse as doubles; casting them to int32 would be undefined.
  for (const char* bad : {"0\n3e10\n", "1\nnan\n", "2\n-inf\n", "1.5\n"}) {
    const std::string path = ::testing::TempDir() + "/labels_bad.csv";
    {
      std::ofstream out(path, std::ios::trunc);
      out << bad;
    }
    absl::StatusOr<std::vector<int32_t>> l = LoadLabels(path);
    ASSERT_FALSE(l.ok()) << bad;
    EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(l.status().message(), HasSubstr("is not an integer"));
    std::remove(path.c_str());
  }
}

TEST(NpyLabels, FloatLabelsAreRejected) {
  absl::StatusOr<std::vector<int32_t>> l =
      LoadLabels(Fixture("logits_f32.npy"));
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NpyLabels, TwoDimensionalIsARankError) {
  absl::StatusOr<std::vector<int32_t>> l = LoadLabels(Fixture("labels_2d.npy"));
  ASSERT_FALSE(l.ok());
  EXPECT_THAT(l.status().message(), HasSubstr("1-D"));
}

TEST(InlineLists, LabelsAndFloats) {
  absl::StatusOr<std::vector<int32_t>> l = LoadLabels("0,3, 4,2");
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_THAT(*l, ElementsAre(0, 3, 4, 2));
  absl::StatusOr<std::vector<float>> f = LoadFloats("1,0.5,2,-0.25");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(*f, ElementsAre(1.0f, 0.5f, 2.0f, -0.25f));
}

TEST(InlineLists, GarbageIsInvalidArgument) {
  EXPECT_EQ(LoadLabels("0,x,2").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadLabels("0,1.5").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadFloats("1,two").status().code(),
            absl::StatusCode::kInvalidArgument);
  // A file name that does not exist is not silently an empty list.
  absl::StatusOr<std::vector<int32_t>> missing =
      LoadLabels("missing_labels.npy");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("missing_labels.npy"));
}

TEST(NpyFloats, OneDimensionalFloat32) {
  absl::StatusOr<std::vector<float>> f = LoadFloats(Fixture("weights_f32.npy"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(*f, ExpectedFloats("weights_f32.npy"));
  EXPECT_FALSE(LoadFloats(Fixture("logits_f32.npy")).ok());  // 2-D
}

TEST(NpyFloatMatrix, ShapeMustMatch) {
  absl::StatusOr<std::vector<float>> t =
      LoadFloatMatrix(Fixture("logits_f32.npy"), 3, 4);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(Bits(*t), Bits(ExpectedFloats("logits_f32.npy")));
  absl::StatusOr<std::vector<float>> wrong =
      LoadFloatMatrix(Fixture("logits_f32.npy"), 4, 3);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(LoadFloatMatrix(Fixture("logits.csv"), 3, 2).ok());
  EXPECT_TRUE(LoadFloatMatrix(Fixture("logits.csv"), 2, 3).ok());
}

TEST(CsvLogits, HeaderlessNumbersFromSavetxt) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("logits.csv"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 3);
  EXPECT_FALSE(m->float16);
  EXPECT_EQ(Bits(m->f32), Bits(ExpectedFloats("logits.csv")));
}

TEST(CsvLogits, RaggedRowsNameTheLine) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("ragged.csv"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              AllOf(HasSubstr("line 3"), HasSubstr("2 values")));
}

TEST(CsvLogits, NonNumericCellNamesLineAndColumn) {
  absl::StatusOr<LogitsMatrix> m = LoadLogits(Fixture("non_numeric.csv"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      m.status().message(),
      AllOf(HasSubstr("line 3"), HasSubstr("column 2"), HasSubstr("abc")));
}

TEST(CsvLabels, OneColumnOrOneRow) {
  for (const char* name : {"labels_column.csv", "labels_row.csv"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::vector<int32_t>> l = LoadLabels(Fixture(name));
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_EQ(*l, ExpectedInts(name));
  }
  // A 2 x 3 table is neither.
  EXPECT_FALSE(LoadLabels(Fixture("logits.csv")).ok());
}

TEST(WriteMatrix, NpyHeaderIsAlignedAndReadsBack) {
  const std::vector<float> values = {0.5f,  -1.25f, 3.0e-30f,
                                     -0.0f, 7.0f,   1e30f};
  const std::string path = TempPath("g.npy");
  ASSERT_TRUE(WriteMatrix(path, values, 2, 3).ok());
  const std::string bytes = ReadBytes(path);
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(bytes[8]) |
                            (static_cast<unsigned char>(bytes[9]) << 8);
  // NumPy's format: the data starts on a 64-byte boundary after a header
  // that ends with '\n'.
  EXPECT_EQ((10 + header_len) % 64, 0u);
  EXPECT_EQ(bytes[10 + header_len - 1], '\n');
  absl::StatusOr<LogitsMatrix> m = LoadLogits(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 3);
  EXPECT_EQ(Bits(m->f32), Bits(values));
  std::remove(path.c_str());
}

TEST(WriteMatrix, CsvReadsBack) {
  const std::vector<float> values = {0.5f, -1.25f, 3.0f, -4.0f};
  const std::string path = TempPath("g.csv");
  ASSERT_TRUE(WriteMatrix(path, values, 2, 2).ok());
  absl::StatusOr<LogitsMatrix> m = LoadLogits(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->cols, 2);
  EXPECT_EQ(m->f32, values);
  std::remove(path.c_str());
}

// Every float32 survives the CSV text (9 significant digits), as it does
// the .npy: a gradient written as CSV is the gradient, not a rounding of it.
TEST(WriteMatrix, CsvKeepsEveryFloat32Digit) {
  const std::vector<float> values = {0.123456789f,    -1.0f / 3.0f,
                                     1.17549435e-38f, 3.40282347e38f,
                                     2.5e-7f,         123456.789f};
  const std::string path = TempPath("g_exact.csv");
  ASSERT_TRUE(WriteMatrix(path, values, 2, 3).ok());
  absl::StatusOr<LogitsMatrix> m = LoadLogits(path);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Bits(m->f32), Bits(values)) << ReadBytes(path);
  std::remove(path.c_str());
}

TEST(WriteMatrix, UnwritablePathIsAnError) {
  EXPECT_FALSE(WriteMatrix("/nonexistent-dir/g.npy", {1.0f}, 1, 1).ok());
}

}  // namespace
}  // namespace cbloss::cli
