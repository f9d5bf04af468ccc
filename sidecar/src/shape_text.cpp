#include "shape_text.hpp"

#include <charconv>
#include <stdexcept>
#include <vector>

namespace sidecar {
namespace {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const auto end = text.find(separator, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return parts;
}

std::int64_t parse_dim(const std::string& text, const std::string& whole) {
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 0) {
    throw std::invalid_argument("shape '" + whole + "': '" + text + "' is not a non-negative integer");
  }
  return value;
}

// "4", "1..512", "?"
void parse_dim_range(const std::string& text, const std::string& whole, std::int64_t& smallest, std::int64_t& largest) {
  if (text == "?") {
    smallest = 0;
    largest = kAnySize;
    return;
  }
  const auto dots = text.find("..");
  if (dots == std::string::npos) {
    smallest = largest = parse_dim(text, whole);
    return;
  }
  smallest = parse_dim(text.substr(0, dots), whole);
  largest = parse_dim(text.substr(dots + 2), whole);
  if (largest < smallest) {
    throw std::invalid_argument("shape '" + whole + "': range '" + text + "' ends below where it starts");
  }
}

// Calls `each_dim(dims text, index)` per dim of each comma-separated entry and returns the
// entries' dtypes and ranks, checking the counts every shape flag shares.
template <typename Shape, typename EachDim>
std::vector<Shape> parse_entries(const std::string& text, EachDim each_dim) {
  std::vector<Shape> shapes;
  for (const std::string& entry : split(text, ',')) {
    Shape shape{};
    std::string dims = entry;
    DType dtype = DType::kFloat32;
    if (const auto colon = entry.find(':'); colon != std::string::npos) {
      dims = entry.substr(0, colon);
      const auto parsed = dtype_from_name(entry.substr(colon + 1));
      if (!parsed) throw std::invalid_argument("shape '" + text + "': unknown dtype '" + entry.substr(colon + 1) + "'");
      dtype = *parsed;
    }
    const auto parts = split(dims, 'x');
    if (dims.empty() || parts.size() > kMaxRank) {
      throw std::invalid_argument("shape '" + text + "': expected 1 to " + std::to_string(kMaxRank) +
                                  " dimensions like 1x3x224x224");
    }
    shape.dtype = static_cast<std::uint8_t>(dtype);
    shape.rank = static_cast<std::uint8_t>(parts.size());
    for (std::size_t d = 0; d < parts.size(); ++d) each_dim(shape, d, parts[d]);
    shapes.push_back(shape);
  }
  if (shapes.size() > kMaxTensors) {
    throw std::invalid_argument("shape '" + text + "': at most " + std::to_string(kMaxTensors) + " inputs");
  }
  return shapes;
}

}  // namespace

InputSignature parse_signature(const std::string& text) {
  return parse_entries<TensorShape>(
      text, [&](TensorShape& shape, std::size_t d, const std::string& dim) { shape.dims[d] = parse_dim(dim, text); });
}

AcceptedSignature parse_accepted_signature(const std::string& text) {
  return parse_entries<ShapeRange>(text, [&](ShapeRange& range, std::size_t d, const std::string& dim) {
    parse_dim_range(dim, text, range.smallest[d], range.largest[d]);
  });
}

std::string shape_flag_text(std::span<const TensorShape> signature) {
  std::string text;
  for (std::size_t i = 0; i < signature.size(); ++i) {
    if (i) text += ",";
    const TensorShape& shape = signature[i];
    for (std::uint32_t d = 0; d < shape.rank && d < kMaxRank; ++d) {
      if (d) text += "x";
      text += std::to_string(shape.dims[d]);
    }
    if (shape.dtype != static_cast<std::uint8_t>(DType::kFloat32)) text += ":" + dtype_text(shape.dtype);
  }
  return text;
}

}  // namespace sidecar
