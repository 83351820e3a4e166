// Copyright 2026 The cbloss Authors.

#include "arrays.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace cbloss::cli {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good())
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool IsCsv(const std::string& path) {
  return absl::EndsWithIgnoreCase(path, ".csv");
}

bool FileExists(const std::string& path) {
  std::ifstream in(path);
  return in.good();
}

// The value of 'key' in a .npy header dict: "{'descr': '<f4', ...}".
absl::StatusOr<std::string> HeaderField(absl::string_view header,
                                        absl::string_view key,
                                        const std::string& what) {
  const std::string quoted = absl::StrCat("'", key, "':");
  size_t at = header.find(quoted);
  if (at == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": .npy header has no '", key, "'"));
  }
  absl::string_view rest =
      absl::StripLeadingAsciiWhitespace(header.substr(at + quoted.size()));
  size_t end;
  if (absl::StartsWith(rest, "(")) {
    end = rest.find(')') + 1;
  } else if (absl::StartsWith(rest, "'")) {
    end = rest.find('\'', 1) + 1;
  } else {
    end = rest.find_first_of(",}");
  }
  if (end == 0 || end == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": malformed .npy header"));
  }
  return std::string(rest.substr(0, end));
}

absl::StatusOr<std::vector<std::vector<double>>> ParseCsv(
    const std::string& text, const std::string& what) {
  std::vector<std::vector<double>> rows;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    std::vector<double> row;
    int column = 0;
    for (absl::string_view cell : absl::StrSplit(line, ',')) {
      double v;
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(cell), &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": line ", line_number, ", column ", column + 1,
                         ": '", cell, "' is not a number"));
      }
      row.push_back(v);
      ++column;
    }
    if (!rows.empty() && row.size() != rows[0].size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": line ", line_number, " has ", row.size(),
                       " values, the first row has ", rows[0].size()));
    }
    rows.push_back(std::move(row));
  }
  if (rows.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no values"));
  }
  return rows;
}

// CSV holding one value per line or one line of values.
absl::StatusOr<std::vector<double>> CsvVector(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<std::vector<double>>> rows = ParseCsv(*text, path);
  if (!rows.ok()) return rows.status();
  std::vector<double> out;
  if (rows->size() == 1) return (*rows)[0];
  for (const auto& r : *rows) {
    if (r.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": expected one column or one row, got ",
                       rows->size(), " x ", r.size()));
    }
    out.push_back(r[0]);
  }
  return out;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

}  // namespace

absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes,
                                  const std::string& what) {
  static constexpr char kMagic[] = "\x93NUMPY";
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a .npy file (no \\x93NUMPY magic)"));
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) |
                 (static_cast<unsigned char>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": truncated"));
    }
    header_len = 0;
    for (int i = 3; i >= 0; --i) {
      header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    }
    header_start = 12;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": unsupported .npy version ", major));
  }
  if (header_start + header_len > bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": truncated header"));
  }
  const absl::string_view header(bytes.data() + header_start, header_len);
  NpyArray a;
  absl::StatusOr<std::string> descr = HeaderField(header, "descr", what);
  if (!descr.ok()) return descr.status();
  a.descr = std::string(absl::StripPrefix(absl::StripSuffix(*descr, "'"), "'"));
  absl::StatusOr<std::string> fortran =
      HeaderField(header, "fortran_order", what);
  if (!fortran.ok()) return fortran.status();
  if (absl::StripAsciiWhitespace(*fortran) != "False") {
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     ": Fortran-order arrays are not supported; save "
                     "np.ascontiguousarray(x)"));
  }
  absl::StatusOr<std::string> shape = HeaderField(header, "shape", what);
  if (!shape.ok()) return shape.status();
  absl::string_view dims =
      absl::StripSuffix(absl::StripPrefix(*shape, "("), ")");
  int64_t count = 1;
  for (absl::string_view d :
       absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
    int64_t v;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(d), &v) || v < 0 ||
        (v > 0 && count > std::numeric_limits<int64_t>::max() / 16 / v)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": bad shape ", *shape));
    }
    a.shape.push_back(v);
    count *= v;
  }
  int width = 0;
  if (a.descr == "<f4" || a.descr == "<i4") width = 4;
  if (a.descr == "<f2") width = 2;
  if (a.descr == "<i8") width = 8;
  if (width == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": dtype '", a.descr,
        "' is not supported (float32 '<f4', float16 '<f2', int32 '<i4', "
        "int64 '<i8')"));
  }
  const size_t data_start = header_start + header_len;
  if (bytes.size() - data_start != static_cast<size_t>(count * width)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": ", bytes.size() - data_start, " data bytes, shape ",
        ShapeString(a.shape), " of ", a.descr, " needs ", count * width));
  }
  a.data = bytes.substr(data_start);
  return a;
}

absl::StatusOr<std::vector<std::vector<double>>> ParseCsvText(
    const std::string& text, const std::string& what) {
  return ParseCsv(text, what);
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  return ParseNpy(*bytes, path);
}

absl::StatusOr<LogitsMatrix> LoadLogits(const std::string& path) {
  LogitsMatrix m;
  if (IsCsv(path)) {
    absl::StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::vector<std::vector<double>>> rows =
        ParseCsv(*text, path);
    if (!rows.ok()) return rows.status();
    m.rows = rows->size();
    m.cols = (*rows)[0].size();
    for (const auto& r : *rows) {
      for (double v : r) m.f32.push_back(static_cast<float>(v));
    }
    return m;
  }
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  if (!a.ok()) return a.status();
  if (a->shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": logits must be 2-D [batch, classes], got shape ",
                     ShapeString(a->shape)));
  }
  m.rows = a->shape[0];
  m.cols = a->shape[1];
  if (a->descr == "<f4") {
    m.f32.resize(m.rows * m.cols);
    std::memcpy(m.f32.data(), a->data.data(), a->data.size());
  } else if (a->descr == "<f2") {
    m.float16 = true;
    m.f16.resize(m.rows * m.cols);
    std::memcpy(m.f16.data(), a->data.data(), a->data.size());
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": logits must be float32 or float16, got '", a->descr, "'"));
  }
  return m;
}

absl::StatusOr<std::vector<float>> LoadFloatMatrix(const std::string& path,
                                                   int64_t rows, int64_t cols) {
  std::vector<float> out;
  if (IsCsv(path)) {
    absl::StatusOr<LogitsMatrix> m = LoadLogits(path);
    if (!m.ok()) return m.status();
    if (m->rows != rows || m->cols != cols) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": shape (", m->rows, ", ", m->cols, ") must be (",
                       rows, ", ", cols, ")"));
    }
    return m->f32;
  }
  absl::StatusOr<NpyArray> a = ReadNpy(path);
  if (!a.ok()) return a.status();
  if (a->descr != "<f4" || a->shape != std::vector<int64_t>{rows, cols}) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected float32 of shape (", rows, ", ", cols,
                     "), got ", a->descr, " ", ShapeString(a->shape)));
  }
  out.resize(rows * cols);
  std::memcpy(out.data(), a->data.data(), a->data.size());
  return out;
}

absl::StatusOr<std::vector<int32_t>> LoadLabels(
    const std::string& file_or_list) {
  std::vector<int32_t> out;
  if (!FileExists(file_or_list)) {
    for (absl::string_view item :
         absl::StrSplit(file_or_list, ',', absl::SkipWhitespace())) {
      int32_t v;
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(item), &v)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "labels: '", file_or_list,
            "' is neither a readable file nor a list of integers"));
      }
      out.push_back(v);
    }
    return out;
  }
  if (IsCsv(file_or_list)) {
    absl::StatusOr<std::vector<double>> v = CsvVector(file_or_list);
    if (!v.ok()) return v.status();
    for (size_t i = 0; i < v->size(); ++i) {
      const double x = (*v)[i];
      // Range first: casting NaN or an out-of-range double is undefined.
      if (!(x >= std::numeric_limits<int32_t>::min() &&
            x <= std::numeric_limits<int32_t>::max()) ||
          x != std::trunc(x)) {
        return absl::InvalidArgumentError(absl::StrCat(
            file_or_list, ": labels[", i, "] = ", x, " is not an integer"));
      }
      out.push_back(static_cast<int32_t>(x));
    }
    return out;
  }
  absl::StatusOr<NpyArray> a = ReadNpy(file_or_list);
  if (!a.ok()) return a.status();
  if (a->shape.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_or_list, ": labels must be 1-D, got shape ",
                     ShapeString(a->shape)));
  }
  const int64_t n = a->shape[0];
  if (a->descr == "<i4") {
    out.resize(n);
    std::memcpy(out.data(), a->data.data(), a->data.size());
  } else if (a->descr == "<i8") {
    for (int64_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, a->data.data() + 8 * i, 8);
      if (v < std::numeric_limits<int32_t>::min() ||
          v > std::numeric_limits<int32_t>::max()) {
        return absl::InvalidArgumentError(absl::StrCat(
            file_or_list, ": labels[", i, "] = ", v, " does not fit in int32"));
      }
      out.push_back(static_cast<int32_t>(v));
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        file_or_list, ": labels must be int32 or int64, got '", a->descr, "'"));
  }
  return out;
}

absl::StatusOr<std::vector<float>> LoadFloats(const std::string& file_or_list) {
  std::vector<float> out;
  if (!FileExists(file_or_list)) {
    for (absl::string_view item :
         absl::StrSplit(file_or_list, ',', absl::SkipWhitespace())) {
      float v;
      if (!absl::SimpleAtof(absl::StripAsciiWhitespace(item), &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", file_or_list,
                         "' is neither a readable file nor a list of numbers"));
      }
      out.push_back(v);
    }
    return out;
  }
  if (IsCsv(file_or_list)) {
    absl::StatusOr<std::vector<double>> v = CsvVector(file_or_list);
    if (!v.ok()) return v.status();
    for (double x : *v) out.push_back(static_cast<float>(x));
    return out;
  }
  absl::StatusOr<NpyArray> a = ReadNpy(file_or_list);
  if (!a.ok()) return a.status();
  if (a->shape.size() != 1 || a->descr != "<f4") {
    return absl::InvalidArgumentError(
        absl::StrCat(file_or_list, ": expected a 1-D float32 array, got ",
                     a->descr, " ", ShapeString(a->shape)));
  }
  out.resize(a->shape[0]);
  std::memcpy(out.data(), a->data.data(), a->data.size());
  return out;
}

namespace {

// A .npy version 1.0 header for a C-order [rows, cols] array of `descr`,
// padded so the data starts on a 64-byte boundary.
std::string NpyHeader(absl::string_view descr, int64_t rows, int64_t cols) {
  std::string header = absl::StrCat("{'descr': '", descr,
                                    "', 'fortran_order': False, 'shape': (",
                                    rows, ", ", cols, "), }");
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  const uint16_t len = static_cast<uint16_t>(header.size());
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>(len >> 8));
  return out + header;
}

absl::Status WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteMatrix(const std::string& path,
                         absl::Span<const float> values, int64_t rows,
                         int64_t cols) {
  std::string bytes;
  if (IsCsv(path)) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        // %.9g: every float32 reads back as itself.
        absl::StrAppend(&bytes, j ? "," : "",
                        absl::StrFormat("%.9g", values[i * cols + j]));
      }
      bytes.push_back('\n');
    }
  } else {
    bytes = NpyHeader("<f4", rows, cols);
    bytes.append(reinterpret_cast<const char*>(values.data()),
                 values.size() * sizeof(float));
  }
  return WriteBytes(path, bytes);
}

absl::Status WriteFloat16Npy(const std::string& path,
                             absl::Span<const uint16_t> bits, int64_t rows,
                             int64_t cols) {
  std::string bytes = NpyHeader("<f2", rows, cols);
  bytes.append(reinterpret_cast<const char*>(bits.data()),
               bits.size() * sizeof(uint16_t));
  return WriteBytes(path, bytes);
}

}  // namespace cbloss::cli
