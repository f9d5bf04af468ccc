#include "npy.hpp"

#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

namespace sidecar::npy {

// Tensors cross into shared memory as they are in this process's memory; the .npy data is
// little-endian, so it is copied without swapping.
static_assert(std::endian::native == std::endian::little, "npy.cpp assumes a little-endian host");

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicBytes = 6;
// np.save pads the header so the data starts on this boundary (for mmap), and leaves this many
// spaces for the first dim to grow by appending: both copied so our files match np.save's bytes.
constexpr std::size_t kArrayAlign = 64;
constexpr std::size_t kGrowthAxisMaxDigits = 21;
// Nesting deeper than any header np.save writes is malformed: the bound keeps recursion shallow.
constexpr int kMaxNesting = 16;

struct DescrEntry {
  DType dtype;
  char kind;  // NumPy's type character: 'f' float, 'i' signed, 'u' unsigned, 'b' bool
};
constexpr DescrEntry kDescrTable[] = {
    {DType::kFloat32, 'f'}, {DType::kFloat64, 'f'}, {DType::kFloat16, 'f'}, {DType::kInt64, 'i'}, {DType::kInt32, 'i'},
    {DType::kInt16, 'i'},   {DType::kInt8, 'i'},    {DType::kUInt8, 'u'},   {DType::kBool, 'b'},
};

std::string supported_descrs() {
  std::string text;
  for (const DescrEntry& entry : kDescrTable) {
    if (!text.empty()) text += ", ";
    text += "'" + descr_for(entry.dtype) + "' (" + std::string(dtype_name(entry.dtype)) + ")";
  }
  return text;
}

std::string shape_repr(std::span<const std::int64_t> shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  if (shape.size() == 1) text += ",";  // Python's one-element tuple
  return text + ")";
}

// A Python literal as it appears in a .npy header. Only what headers hold: strings, booleans,
// None, integers, tuples and lists.
struct Literal {
  enum class Kind { kString, kBool, kNone, kInteger, kTuple, kList };
  Kind kind = Kind::kNone;
  std::string text;
  bool flag = false;
  std::int64_t integer = 0;
  std::vector<Literal> items;
};

// Parses the header dict the way Python's ast.literal_eval would for what np.save writes: keys in
// any order, any spacing, trailing commas, and Python 2's "3L" integers.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& source) : text_(text), source_(source) {}

  std::vector<std::pair<std::string, Literal>> parse_dict() {
    std::vector<std::pair<std::string, Literal>> entries;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      Literal key = parse_value(1);
      if (key.kind != Literal::Kind::kString) fail("a dict key is not a string");
      skip_space();
      expect(':');
      entries.emplace_back(key.text, parse_value(1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') fail("expected ',' or '}'");
    }
    ++pos_;
    skip_space();
    if (pos_ != text_.size()) fail("text after the closing '}'");
    return entries;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(source_ + ": malformed .npy header: " + what + " at byte " + std::to_string(pos_) +
                             " of \"" + std::string(text_.substr(0, 200)) + "\"");
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void expect(char wanted) {
    skip_space();
    if (peek() != wanted) fail(std::string("expected '") + wanted + "'");
    ++pos_;
  }

  Literal parse_value(int depth) {
    if (depth > kMaxNesting) fail("nesting too deep");
    skip_space();
    const char c = peek();
    if (c == '\'' || c == '"') return parse_string();
    if (c == '(' || c == '[') return parse_sequence(depth);
    if (c == '-' || c == '+' || (c >= '0' && c <= '9')) return parse_integer();
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return parse_name();
    fail(c == '\0' ? "unexpected end" : std::string("unexpected '") + c + "'");
  }

  Literal parse_string() {
    const char quote = text_[pos_++];
    Literal literal;
    literal.kind = Literal::Kind::kString;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      const char c = text_[pos_++];
      if (c == quote) break;
      if (c == '\\') {
        if (pos_ >= text_.size()) fail("unterminated string");
        literal.text += text_[pos_++];
      } else {
        literal.text += c;
      }
    }
    return literal;
  }

  Literal parse_sequence(int depth) {
    const char open = text_[pos_++];
    const char close = open == '(' ? ')' : ']';
    Literal literal;
    literal.kind = open == '(' ? Literal::Kind::kTuple : Literal::Kind::kList;
    while (true) {
      skip_space();
      if (peek() == close) break;
      literal.items.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != close) fail(std::string("expected ',' or '") + close + "'");
    }
    ++pos_;
    return literal;
  }

  Literal parse_integer() {
    Literal literal;
    literal.kind = Literal::Kind::kInteger;
    bool negative = false;
    if (peek() == '-' || peek() == '+') negative = text_[pos_++] == '-';
    if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit");
    std::uint64_t magnitude = 0;
    while (peek() >= '0' && peek() <= '9') {
      const auto digit = static_cast<std::uint64_t>(text_[pos_++] - '0');
      if (magnitude > (static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - digit) / 10) {
        fail("integer too large");
      }
      magnitude = magnitude * 10 + digit;
    }
    if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 long, in headers numpy wrote on Python 2
    literal.integer = negative ? -static_cast<std::int64_t>(magnitude) : static_cast<std::int64_t>(magnitude);
    return literal;
  }

  Literal parse_name() {
    const std::size_t start = pos_;
    while ((peek() >= 'A' && peek() <= 'Z') || (peek() >= 'a' && peek() <= 'z') || peek() == '_') ++pos_;
    const std::string_view name = text_.substr(start, pos_ - start);
    Literal literal;
    if (name == "True" || name == "False") {
      literal.kind = Literal::Kind::kBool;
      literal.flag = name == "True";
    } else if (name == "None") {
      literal.kind = Literal::Kind::kNone;
    } else {
      pos_ = start;
      fail("unknown name '" + std::string(name) + "'");
    }
    return literal;
  }

  std::string_view text_;
  const std::string& source_;
  std::size_t pos_ = 0;
};

std::uint32_t read_le(const std::byte* bytes, std::size_t count) {
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < count; ++i) value |= static_cast<std::uint32_t>(bytes[i]) << (8 * i);
  return value;
}

// Element count times item size, or false on overflow.
bool data_byte_size(std::span<const std::int64_t> shape, std::size_t item_size, std::uint64_t& bytes) {
  std::uint64_t total = item_size;
  for (std::int64_t dim : shape) {
    if (dim < 0) return false;
    if (__builtin_mul_overflow(total, static_cast<std::uint64_t>(dim), &total)) return false;
  }
  bytes = total;
  return true;
}

}  // namespace

std::optional<DType> dtype_for_descr(std::string_view descr) {
  if (descr.size() < 3) return std::nullopt;
  const char order = descr[0];
  // '=' is native order, which is little-endian here (static_assert above); np.save writes '<'.
  if (order != '<' && order != '|' && order != '=' && order != '>') return std::nullopt;
  const char kind = descr[1];
  std::size_t size = 0;
  for (char c : descr.substr(2)) {
    if (c < '0' || c > '9' || size > 64) return std::nullopt;
    size = size * 10 + static_cast<std::size_t>(c - '0');
  }
  // Byte order means nothing for one-byte items, so '>i1' is as good as '|i1'.
  if (order == '>' && size != 1) return std::nullopt;
  for (const DescrEntry& entry : kDescrTable) {
    if (entry.kind == kind && dtype_size(entry.dtype) == size) return entry.dtype;
  }
  return std::nullopt;
}

std::string descr_for(DType dtype) {
  for (const DescrEntry& entry : kDescrTable) {
    if (entry.dtype == dtype) {
      const std::size_t size = dtype_size(dtype);
      return std::string(size == 1 ? "|" : "<") + entry.kind + std::to_string(size);
    }
  }
  throw std::runtime_error("dtype " + std::string(dtype_name(dtype)) + " has no NumPy equivalent in a .npy file");
}

Tensor parse_npy(std::span<const std::byte> bytes, const std::string& source) {
  auto fail = [&](const std::string& what) -> std::runtime_error { return std::runtime_error(source + ": " + what); };

  if (bytes.empty()) throw fail("file is empty, not a .npy file");
  if (bytes.size() < kMagicBytes || std::memcmp(bytes.data(), kMagic, kMagicBytes) != 0) {
    throw fail("not a .npy file (bad magic: it does not start with \\x93NUMPY)");
  }
  if (bytes.size() < kMagicBytes + 2) throw fail("truncated: the file ends inside the format version");
  const auto major = static_cast<unsigned>(bytes[6]);
  const auto minor = static_cast<unsigned>(bytes[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    throw fail(".npy format version " + std::to_string(major) + "." + std::to_string(minor) +
               " is not supported (1.0, 2.0 and 3.0 are)");
  }
  // 1.0 has a 16-bit header length; 2.0 a 32-bit one; 3.0 is 2.0 with a UTF-8 header.
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  const std::size_t header_start = kMagicBytes + 2 + length_bytes;
  if (bytes.size() < header_start) throw fail("truncated: the file ends inside the header length");
  const std::uint64_t header_bytes = read_le(bytes.data() + kMagicBytes + 2, length_bytes);
  if (bytes.size() - header_start < header_bytes) {
    throw fail("truncated: the header should be " + std::to_string(header_bytes) + " bytes, the file has " +
               std::to_string(bytes.size() - header_start) + " after the header length");
  }
  const std::string_view header(reinterpret_cast<const char*>(bytes.data() + header_start), header_bytes);

  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<std::vector<std::int64_t>> shape;
  for (auto& [key, value] : HeaderParser(header, source).parse_dict()) {
    if (key == "descr") {
      if (value.kind == Literal::Kind::kList) {
        throw fail("structured dtypes (a list 'descr') are not supported; save a plain array");
      }
      if (value.kind != Literal::Kind::kString) throw fail("header 'descr' is not a string");
      descr = value.text;
    } else if (key == "fortran_order") {
      if (value.kind != Literal::Kind::kBool) throw fail("header 'fortran_order' is not True or False");
      fortran_order = value.flag;
    } else if (key == "shape") {
      if (value.kind != Literal::Kind::kTuple && value.kind != Literal::Kind::kList) {
        throw fail("header 'shape' is not a tuple");
      }
      shape.emplace();
      for (const Literal& dim : value.items) {
        if (dim.kind != Literal::Kind::kInteger || dim.integer < 0) {
          throw fail("header 'shape' holds something other than a non-negative integer");
        }
        shape->push_back(dim.integer);
      }
    }
    // Other keys are not part of the format; NumPy refuses them, we ignore them.
  }
  if (!descr || !fortran_order || !shape) {
    throw fail("the header lacks " + std::string(!descr ? "'descr'" : !fortran_order ? "'fortran_order'" : "'shape'"));
  }

  const std::optional<DType> dtype = dtype_for_descr(*descr);
  if (!dtype) {
    if (!descr->empty() && (*descr)[0] == '>') {
      throw fail("big-endian data ('" + *descr +
                 "') is not supported; save a little-endian copy with a.astype(a.dtype.newbyteorder('<'))");
    }
    throw fail("unsupported dtype '" + *descr + "'; supported: " + supported_descrs());
  }
  if (*fortran_order) {
    throw fail(
        "the array is in Fortran order (fortran_order: True), only C order is supported; save np.ascontiguousarray(a)");
  }

  std::uint64_t data_bytes = 0;
  if (!data_byte_size(*shape, dtype_size(*dtype), data_bytes))
    throw fail("shape " + shape_repr(*shape) + " is too large");
  const std::uint64_t available = bytes.size() - header_start - header_bytes;
  if (available != data_bytes) {
    throw fail(std::string(available < data_bytes ? "truncated: " : "data size mismatch: ") + "shape " +
               shape_repr(*shape) + " of " + std::string(dtype_name(*dtype)) + " needs " + std::to_string(data_bytes) +
               " bytes of data, the file has " + std::to_string(available));
  }

  Tensor tensor;
  tensor.dtype = *dtype;
  tensor.shape = std::move(*shape);
  const std::byte* data = bytes.data() + header_start + header_bytes;
  tensor.data.assign(data, data + data_bytes);
  if (*dtype == DType::kBool) {
    // Any other byte is not a bool to LibTorch; NumPy never writes one, so the file is damaged.
    for (std::size_t i = 0; i < tensor.data.size(); ++i) {
      if (static_cast<std::uint8_t>(tensor.data[i]) > 1) {
        throw fail("bool element " + std::to_string(i) + " is byte " +
                   std::to_string(static_cast<unsigned>(tensor.data[i])) + ", not 0 or 1");
      }
    }
  }
  return tensor;
}

Tensor read_npy(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::vector<std::byte> bytes;
  std::byte chunk[1 << 16];
  std::size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof(chunk), file.get())) > 0) bytes.insert(bytes.end(), chunk, chunk + got);
  if (std::ferror(file.get())) throw std::runtime_error(path + ": cannot read: " + std::strerror(errno));
  return parse_npy(bytes, path);
}

std::vector<std::byte> encode_npy(const TensorView& tensor) {
  const std::string descr = descr_for(tensor.dtype);
  std::uint64_t data_bytes = 0;
  if (!data_byte_size(tensor.shape, dtype_size(tensor.dtype), data_bytes)) {
    throw std::runtime_error("shape " + describe(tensor.dtype, tensor.shape) +
                             " has a negative dimension or is too large");
  }
  if (data_bytes != tensor.bytes || (tensor.bytes != 0 && tensor.data == nullptr)) {
    throw std::runtime_error("tensor " + describe(tensor.dtype, tensor.shape) + " needs " + std::to_string(data_bytes) +
                             " bytes, the view has " + std::to_string(tensor.bytes));
  }

  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape_repr(tensor.shape) + ", }";
  if (!tensor.shape.empty()) header.append(kGrowthAxisMaxDigits - std::to_string(tensor.shape[0]).size(), ' ');
  // The header ends with '\n' and is padded with spaces so that the data starts aligned.
  std::size_t length_bytes = 2;
  std::size_t header_bytes = header.size() + 1;
  header_bytes += kArrayAlign - (kMagicBytes + 2 + length_bytes + header_bytes) % kArrayAlign;
  unsigned major = 1;
  if (header_bytes > std::numeric_limits<std::uint16_t>::max()) {
    major = 2;
    length_bytes = 4;
    header_bytes = header.size() + 1;
    header_bytes += kArrayAlign - (kMagicBytes + 2 + length_bytes + header_bytes) % kArrayAlign;
    if (header_bytes > std::numeric_limits<std::uint32_t>::max())
      throw std::runtime_error("the .npy header is too large");
  }
  header.append(header_bytes - header.size() - 1, ' ');
  header += '\n';

  std::vector<std::byte> bytes;
  bytes.reserve(kMagicBytes + 2 + length_bytes + header.size() + tensor.bytes);
  auto append = [&](const void* data, std::size_t count) {
    // resize + memcpy rather than insert: GCC 12 at -O3 warns (-Wstringop-overflow, a false
    // positive) on inserting a range into this reserved vector.
    const std::size_t at = bytes.size();
    bytes.resize(at + count);
    if (count != 0) std::memcpy(bytes.data() + at, data, count);
  };
  append(kMagic, kMagicBytes);
  bytes.push_back(static_cast<std::byte>(major));
  bytes.push_back(std::byte{0});
  for (std::size_t i = 0; i < length_bytes; ++i)
    bytes.push_back(static_cast<std::byte>((header_bytes >> (8 * i)) & 0xff));
  append(header.data(), header.size());
  if (tensor.bytes) append(tensor.data, tensor.bytes);
  return bytes;
}

void write_npy(const std::string& path, const TensorView& tensor) {
  std::vector<std::byte> bytes;
  try {
    bytes = encode_npy(tensor);
  } catch (const std::runtime_error& error) {
    throw std::runtime_error(path + ": cannot write: " + error.what());
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file) throw std::runtime_error(path + ": cannot open for writing: " + std::strerror(errno));
  if (std::fwrite(bytes.data(), 1, bytes.size(), file.get()) != bytes.size()) {
    throw std::runtime_error(path + ": cannot write: " + std::strerror(errno));
  }
  // fclose flushes: a full disk shows up here, not in fwrite.
  if (std::fclose(file.release()) != 0) throw std::runtime_error(path + ": cannot write: " + std::strerror(errno));
}

}  // namespace sidecar::npy
