// Copyright 2026 The cbloss Authors.
//
// Fuzzes the CLI's file readers (client/cli/arrays.h) with arbitrary bytes:
// every input is parsed both as a .npy file and as CSV text. Neither may
// crash; an accepted .npy must hold exactly product(shape) * itemsize data
// bytes, and accepted CSV must be a non-empty rectangle.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "arrays.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "arrays_fuzzer: %s\n", what);
  std::abort();
}

int ItemSize(const std::string& descr) {
  if (descr == "<f4" || descr == "<i4") return 4;
  if (descr == "<f2") return 2;
  if (descr == "<i8") return 8;
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);

  absl::StatusOr<cbloss::cli::NpyArray> npy =
      cbloss::cli::ParseNpy(bytes, "input.npy");
  if (npy.ok()) {
    const int itemsize = ItemSize(npy->descr);
    if (itemsize == 0) Fail("accepted an unsupported dtype");
    // Exact product: a shape whose element count wraps around must not be
    // accepted because the wrapped count matches the data.
    bool has_zero = false;
    for (int64_t d : npy->shape) {
      if (d < 0) Fail("negative dimension accepted");
      has_zero |= d == 0;
    }
    unsigned __int128 expected = has_zero ? 0 : itemsize;
    for (int64_t d : npy->shape) {
      if (has_zero) break;
      expected *= static_cast<uint64_t>(d);  // >= 1, so never decreases
      if (expected > size) Fail("shape claims more bytes than the input has");
    }
    if (npy->data.size() != expected) {
      Fail("data size != product(shape) * itemsize");
    }
  } else if (npy.status().message().empty()) {
    Fail("npy error without a message");
  }

  absl::StatusOr<std::vector<std::vector<double>>> csv =
      cbloss::cli::ParseCsvText(bytes, "input.csv");
  if (csv.ok()) {
    if (csv->empty() || (*csv)[0].empty()) Fail("empty CSV accepted");
    for (const std::vector<double>& row : *csv) {
      if (row.size() != (*csv)[0].size()) Fail("ragged CSV accepted");
    }
  } else if (csv.status().message().empty()) {
    Fail("csv error without a message");
  }
  return 0;
}
