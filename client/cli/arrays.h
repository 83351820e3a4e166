// Copyright 2026 The cbloss Authors.
//
// Arrays from files for the CLI: NumPy .npy (float32 / float16 2-D C-order
// logits, int32 / int64 1-D labels) and CSV (numbers separated by commas,
// one row per line), plus comma-separated lists given on the command line.
// Errors are INVALID_ARGUMENT / NOT_FOUND statuses naming the file and what
// is wrong with it.

#ifndef CBLOSS_CLIENT_CLI_ARRAYS_H_
#define CBLOSS_CLIENT_CLI_ARRAYS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace cbloss::cli {

// A .npy file's content: element type, shape, raw little-endian bytes.
struct NpyArray {
  std::string descr;  // "<f4", "<f2", "<i4", "<i8", ...
  std::vector<int64_t> shape;
  std::string data;
};

absl::StatusOr<NpyArray> ReadNpy(const std::string& path);
// Parses the bytes of a .npy file (`what` names it in messages).
absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes,
                                  const std::string& what);

// Parses CSV text: numbers separated by commas, one row per line; blank lines
// and lines starting with '#' are skipped; every row has the same number of
// values. `what` names the source in messages.
absl::StatusOr<std::vector<std::vector<double>>> ParseCsvText(
    const std::string& text, const std::string& what);

// Logits: float32 values, or float16 bit patterns when the .npy is float16.
struct LogitsMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  bool float16 = false;
  std::vector<float> f32;
  std::vector<uint16_t> f16;
};

// .npy (float32 / float16, 2-D, C order) or .csv.
absl::StatusOr<LogitsMatrix> LoadLogits(const std::string& path);
// A [rows, cols] float32 matrix from .npy (float32) or .csv (targets).
absl::StatusOr<std::vector<float>> LoadFloatMatrix(const std::string& path,
                                                   int64_t rows, int64_t cols);
// A file (.npy int32/int64 1-D, or .csv) or an inline list "0,3,4".
absl::StatusOr<std::vector<int32_t>> LoadLabels(
    const std::string& file_or_list);
// A file (.npy float32 1-D, or .csv) or an inline list "1,0.5,2".
absl::StatusOr<std::vector<float>> LoadFloats(const std::string& file_or_list);

// Writes a float32 [rows, cols] matrix as .npy, or .csv if the name ends so.
absl::Status WriteMatrix(const std::string& path,
                         absl::Span<const float> values, int64_t rows,
                         int64_t cols);

// Writes float16 bit patterns as a [rows, cols] float16 .npy.
absl::Status WriteFloat16Npy(const std::string& path,
                             absl::Span<const uint16_t> bits, int64_t rows,
                             int64_t cols);

}  // namespace cbloss::cli

#endif  // CBLOSS_CLIENT_CLI_ARRAYS_H_
