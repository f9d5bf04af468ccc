// NumPy .npy reading and writing (clientlib/tools/npy.cpp): round trips, files NumPy wrote, and
// the one-line errors for files we refuse.
#include "npy.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using sidecar::DType;
using sidecar::Tensor;
using sidecar::TensorView;
using sidecar::npy::encode_npy;
using sidecar::npy::parse_npy;
using sidecar::npy::read_npy;
using sidecar::npy::write_npy;

// Files written by NumPy 1.24 (np.save(f, ARRAY) unless stated), as hex, so that these tests
// need no Python. Regenerate with: import io, numpy as np; f = io.BytesIO(); np.save(f, a);
// print(f.getvalue().hex()). write_array is numpy.lib.format.write_array.
// np.arange(6, dtype='<f4').reshape(2, 3) / 4
constexpr char kFloat32_2x3[] =
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a000000000000803e0000003f0000403f"
    "0000803f0000a03f";
// np.array(3.5, dtype='<f8')
constexpr char kFloat64Scalar[] =
    "934e554d5059010076007b276465736372273a20273c6638272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028292c207d20202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a0000000000000c40";
// np.array([-1, 0, 1 << 40], dtype='<i8')
constexpr char kInt64_3[] =
    "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200affffffffffffffff0000000000000000"
    "0000000000010000";
// np.array([[-7, 8], [2**31 - 1, -2**31]], dtype='<i4')
constexpr char kInt32_2x2[] =
    "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c2032292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200af9ffffff08000000ffffff7f00000080";
// np.array([-300, 300], dtype='<i2')
constexpr char kInt16_2[] =
    "934e554d5059010076007b276465736372273a20273c6932272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200ad4fe2c01";
// np.array([-128, 0, 127], dtype='i1')
constexpr char kInt8_3[] =
    "934e554d5059010076007b276465736372273a20277c6931272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a80007f";
// np.array([[0, 1, 128, 255]], dtype='u1')
constexpr char kUInt8_1x4[] =
    "934e554d5059010076007b276465736372273a20277c7531272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028312c2034292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a000180ff";
// np.array([True, False, False, True])
constexpr char kBool_4[] =
    "934e554d5059010076007b276465736372273a20277c6231272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028342c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a01000001";
// np.array([1.0, -2.5], dtype='<f2')
constexpr char kFloat16_2[] =
    "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a003c00c1";
// np.zeros((0, 3), dtype='<f4')
constexpr char kFloat32_0x3[] =
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028302c2033292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a";
// write_array(f, np.array([1.5, 2.5], dtype='<f4'), version=(2, 0))
constexpr char kFloat32Version2[] =
    "934e554d50590200740000007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a204661"
    "6c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a0000c03f00002040";
// write_array(f, np.array([1.5, 2.5], dtype='<f4'), version=(3, 0))
constexpr char kFloat32Version3[] =
    "934e554d50590300740000007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a204661"
    "6c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a0000c03f00002040";
// np.asfortranarray(np.arange(6, dtype='<i4').reshape(2, 3))
constexpr char kFortranInt32_2x3[] =
    "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a2054727565"
    "2c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a00000000030000000100000004000000"
    "0200000005000000";
// np.array([1.0, 2.0], dtype='>f4')
constexpr char kBigEndianFloat32_2[] =
    "934e554d5059010076007b276465736372273a20273e6634272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a3f80000040000000";
// np.array([1, 2], dtype='<u4')
constexpr char kUInt32_2[] =
    "934e554d5059010076007b276465736372273a20273c7534272c2027666f727472616e5f6f72646572273a2046616c73"
    "652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020200a0100000002000000";

std::vector<std::byte> from_hex(const char* hex) {
  std::vector<std::byte> bytes;
  for (std::size_t i = 0; hex[i] && hex[i + 1]; i += 2) {
    bytes.push_back(static_cast<std::byte>(std::stoi(std::string(hex + i, 2), nullptr, 16)));
  }
  return bytes;
}

template <typename T>
std::vector<T> values_of(const Tensor& tensor) {
  std::vector<T> values(tensor.data.size() / sizeof(T));
  std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(T));
  return values;
}

// A .npy file with `header` as its header text, padded the way np.save pads it.
std::vector<std::byte> npy_with_header(std::string header, const std::vector<std::byte>& data, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  header += ' ';
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::vector<std::byte> bytes;
  for (char c : std::string("\x93NUMPY")) bytes.push_back(static_cast<std::byte>(c));
  bytes.push_back(static_cast<std::byte>(major));
  bytes.push_back(std::byte{0});
  for (std::size_t i = 0; i < prefix - 8; ++i)
    bytes.push_back(static_cast<std::byte>((header.size() >> (8 * i)) & 0xff));
  for (char c : header) bytes.push_back(static_cast<std::byte>(c));
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

std::vector<std::byte> float32_bytes(std::vector<float> values) {
  std::vector<std::byte> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// The message parse_npy throws for `bytes`, or "" when it accepts them.
std::string parse_error(const std::vector<std::byte>& bytes, const std::string& source = "test.npy") {
  try {
    parse_npy(bytes, source);
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return {};
}

class NpyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "npy-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    directory_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::string path(const std::string& file) const { return (directory_ / file).string(); }

  void write_bytes(const std::string& file, const std::vector<std::byte>& bytes) const {
    std::ofstream out(path(file), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }

  std::string read_error(const std::string& file) const {
    try {
      read_npy(path(file));
    } catch (const std::runtime_error& error) {
      return error.what();
    }
    return {};
  }

  std::filesystem::path directory_;
};

TEST(NpyNumpyCompat, ReadsEveryDtypeNumpyWrites) {
  Tensor f32 = parse_npy(from_hex(kFloat32_2x3), "f32");
  EXPECT_EQ(f32.dtype, DType::kFloat32);
  EXPECT_EQ(f32.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(values_of<float>(f32), (std::vector<float>{0, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f}));

  Tensor f64 = parse_npy(from_hex(kFloat64Scalar), "f64");
  EXPECT_EQ(f64.dtype, DType::kFloat64);
  EXPECT_TRUE(f64.shape.empty());
  EXPECT_EQ(values_of<double>(f64), (std::vector<double>{3.5}));

  Tensor i64 = parse_npy(from_hex(kInt64_3), "i64");
  EXPECT_EQ(i64.dtype, DType::kInt64);
  EXPECT_EQ(i64.shape, (std::vector<std::int64_t>{3}));
  EXPECT_EQ(values_of<std::int64_t>(i64), (std::vector<std::int64_t>{-1, 0, std::int64_t{1} << 40}));

  Tensor i32 = parse_npy(from_hex(kInt32_2x2), "i32");
  EXPECT_EQ(i32.dtype, DType::kInt32);
  EXPECT_EQ(values_of<std::int32_t>(i32), (std::vector<std::int32_t>{-7, 8, INT32_MAX, INT32_MIN}));

  Tensor i16 = parse_npy(from_hex(kInt16_2), "i16");
  EXPECT_EQ(i16.dtype, DType::kInt16);
  EXPECT_EQ(values_of<std::int16_t>(i16), (std::vector<std::int16_t>{-300, 300}));

  Tensor i8 = parse_npy(from_hex(kInt8_3), "i8");
  EXPECT_EQ(i8.dtype, DType::kInt8);
  EXPECT_EQ(values_of<std::int8_t>(i8), (std::vector<std::int8_t>{-128, 0, 127}));

  Tensor u8 = parse_npy(from_hex(kUInt8_1x4), "u8");
  EXPECT_EQ(u8.dtype, DType::kUInt8);
  EXPECT_EQ(u8.shape, (std::vector<std::int64_t>{1, 4}));
  EXPECT_EQ(values_of<std::uint8_t>(u8), (std::vector<std::uint8_t>{0, 1, 128, 255}));

  Tensor flags = parse_npy(from_hex(kBool_4), "bool");
  EXPECT_EQ(flags.dtype, DType::kBool);
  EXPECT_EQ(values_of<std::uint8_t>(flags), (std::vector<std::uint8_t>{1, 0, 0, 1}));

  Tensor f16 = parse_npy(from_hex(kFloat16_2), "f16");
  EXPECT_EQ(f16.dtype, DType::kFloat16);
  EXPECT_EQ(values_of<std::uint16_t>(f16), (std::vector<std::uint16_t>{0x3c00, 0xc100}));  // 1.0, -2.5

  Tensor empty = parse_npy(from_hex(kFloat32_0x3), "empty");
  EXPECT_EQ(empty.shape, (std::vector<std::int64_t>{0, 3}));
  EXPECT_TRUE(empty.data.empty());
}

TEST(NpyNumpyCompat, ReadsFormatVersions2And3) {
  for (const char* hex : {kFloat32Version2, kFloat32Version3}) {
    Tensor tensor = parse_npy(from_hex(hex), "v2-or-v3");
    EXPECT_EQ(tensor.dtype, DType::kFloat32);
    EXPECT_EQ(tensor.shape, (std::vector<std::int64_t>{2}));
    EXPECT_EQ(values_of<float>(tensor), (std::vector<float>{1.5f, 2.5f}));
  }
}

// Files we write are the bytes np.save writes, so any NumPy reads them as its own.
TEST(NpyNumpyCompat, WritesTheBytesNumpyWrites) {
  for (const char* hex : {kFloat32_2x3, kFloat64Scalar, kInt64_3, kInt32_2x2, kInt16_2, kInt8_3, kUInt8_1x4, kBool_4,
                          kFloat16_2, kFloat32_0x3}) {
    const std::vector<std::byte> numpy_bytes = from_hex(hex);
    const Tensor tensor = parse_npy(numpy_bytes, "numpy");
    EXPECT_EQ(encode_npy(tensor.view()), numpy_bytes) << sidecar::describe(tensor.dtype, tensor.shape);
  }
}

TEST(NpyNumpyCompat, RefusesFortranOrderBigEndianAndUnsignedWide) {
  const std::string fortran = parse_error(from_hex(kFortranInt32_2x3), "fortran.npy");
  EXPECT_NE(fortran.find("fortran.npy: "), std::string::npos) << fortran;
  EXPECT_NE(fortran.find("Fortran order"), std::string::npos) << fortran;

  const std::string big_endian = parse_error(from_hex(kBigEndianFloat32_2));
  EXPECT_NE(big_endian.find("big-endian"), std::string::npos) << big_endian;
  EXPECT_NE(big_endian.find("'>f4'"), std::string::npos) << big_endian;

  const std::string uint32 = parse_error(from_hex(kUInt32_2));
  EXPECT_NE(uint32.find("unsupported dtype '<u4'"), std::string::npos) << uint32;
}

TEST(NpyDescr, MapsNumpyTypeStrings) {
  using sidecar::npy::dtype_for_descr;
  EXPECT_EQ(dtype_for_descr("<f4"), DType::kFloat32);
  EXPECT_EQ(dtype_for_descr("<f8"), DType::kFloat64);
  EXPECT_EQ(dtype_for_descr("<f2"), DType::kFloat16);
  EXPECT_EQ(dtype_for_descr("<i8"), DType::kInt64);
  EXPECT_EQ(dtype_for_descr("<i4"), DType::kInt32);
  EXPECT_EQ(dtype_for_descr("<i2"), DType::kInt16);
  EXPECT_EQ(dtype_for_descr("|i1"), DType::kInt8);
  EXPECT_EQ(dtype_for_descr("|u1"), DType::kUInt8);
  EXPECT_EQ(dtype_for_descr("|b1"), DType::kBool);
  EXPECT_EQ(dtype_for_descr("=f8"), DType::kFloat64);  // native order is little-endian here
  EXPECT_EQ(dtype_for_descr(">i1"), DType::kInt8);     // byte order means nothing for one byte
  EXPECT_EQ(dtype_for_descr(">f4"), std::nullopt);
  EXPECT_EQ(dtype_for_descr("<u4"), std::nullopt);
  EXPECT_EQ(dtype_for_descr("<c8"), std::nullopt);
  EXPECT_EQ(dtype_for_descr("<f"), std::nullopt);
  EXPECT_EQ(dtype_for_descr("<f99999999999999999999"), std::nullopt);
  EXPECT_EQ(dtype_for_descr("<U5"), std::nullopt);
  EXPECT_THROW(sidecar::npy::descr_for(DType::kBFloat16), std::runtime_error);
}

TEST_F(NpyFileTest, RoundTripsEveryDtype) {
  const std::vector<std::int64_t> shape{2, 3};
  for (DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kInt64, DType::kInt32, DType::kInt16,
                      DType::kInt8, DType::kUInt8, DType::kBool}) {
    const std::size_t bytes = 6 * sidecar::dtype_size(dtype);
    std::vector<std::byte> data(bytes);
    // Bools must be 0 or 1; other dtypes get every byte distinct to catch reordering.
    for (std::size_t i = 0; i < bytes; ++i) data[i] = static_cast<std::byte>(dtype == DType::kBool ? i % 2 : i * 7 + 1);
    const std::string file = path(std::string(sidecar::dtype_name(dtype)) + ".npy");
    write_npy(file, TensorView{dtype, shape, data.data(), data.size()});
    const Tensor back = read_npy(file);
    EXPECT_EQ(back.dtype, dtype) << sidecar::dtype_name(dtype);
    EXPECT_EQ(back.shape, shape) << sidecar::dtype_name(dtype);
    EXPECT_EQ(back.data, data) << sidecar::dtype_name(dtype);
  }
}

TEST_F(NpyFileTest, RoundTripsZeroDimAndEmptyArrays) {
  const double value = -0.125;
  write_npy(path("scalar.npy"), TensorView{DType::kFloat64, {}, &value, sizeof(value)});
  const Tensor scalar = read_npy(path("scalar.npy"));
  EXPECT_TRUE(scalar.shape.empty());
  EXPECT_EQ(values_of<double>(scalar), (std::vector<double>{value}));

  for (const std::vector<std::int64_t>& shape : {std::vector<std::int64_t>{0}, {3, 0, 2}, {0, 0}}) {
    write_npy(path("empty.npy"), TensorView{DType::kInt32, shape, nullptr, 0});
    const Tensor empty = read_npy(path("empty.npy"));
    EXPECT_EQ(empty.dtype, DType::kInt32);
    EXPECT_EQ(empty.shape, shape);
    EXPECT_TRUE(empty.data.empty());
  }
}

// Only a header longer than 1.0's 16-bit length needs 2.0; NumPy cannot even make one (32 dims at
// most), but a tensor can have this many.
TEST_F(NpyFileTest, WritesVersion2WhenTheHeaderDoesNotFitVersion1) {
  const std::vector<std::int64_t> shape(30000, 1);
  const float value = 4.0f;
  const std::vector<std::byte> bytes = encode_npy(TensorView{DType::kFloat32, shape, &value, sizeof(value)});
  EXPECT_EQ(static_cast<int>(bytes[6]), 2);
  EXPECT_EQ((bytes.size() - sizeof(value)) % 64, 0u) << "the data must start 64-byte aligned, as np.save aligns it";
  const Tensor back = parse_npy(bytes, "long");
  EXPECT_EQ(back.shape, shape);
  EXPECT_EQ(values_of<float>(back), (std::vector<float>{4.0f}));

  const std::vector<std::byte> short_header =
      encode_npy(TensorView{DType::kFloat32, std::vector<std::int64_t>{1}, &value, sizeof(value)});
  EXPECT_EQ(static_cast<int>(short_header[6]), 1);
}

TEST(NpyHeader, AcceptsAnyKeyOrderQuotingSpacingAndTrailingComma) {
  const std::vector<std::byte> data = float32_bytes({1.0f, 2.0f});
  for (const std::string& header : {
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"),
           std::string("{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}"),
           std::string("{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(2,)}"),
           std::string("{ 'fortran_order' : False ,\n 'shape' : ( 2 , ) ,\t'descr' : '<f4' , }"),
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }"),  // NumPy on Python 2
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }"),
       }) {
    SCOPED_TRACE(header);
    const Tensor tensor = parse_npy(npy_with_header(header, data), "header");
    EXPECT_EQ(tensor.dtype, DType::kFloat32);
    EXPECT_EQ(tensor.shape, (std::vector<std::int64_t>{2}));
    EXPECT_EQ(values_of<float>(tensor), (std::vector<float>{1.0f, 2.0f}));
  }
  const Tensor scalar =
      parse_npy(npy_with_header("{'descr':'<f4','fortran_order':False,'shape':()}", float32_bytes({7.0f})), "s");
  EXPECT_TRUE(scalar.shape.empty());
  const Tensor matrix = parse_npy(npy_with_header("{'descr':'<f4','fortran_order':False,'shape':(1,2,)}", data), "m");
  EXPECT_EQ(matrix.shape, (std::vector<std::int64_t>{1, 2}));
}

TEST(NpyHeader, RefusesMalformedHeadersWithTheReason) {
  const std::vector<std::byte> data = float32_bytes({1.0f, 2.0f});
  struct Case {
    std::string header;
    std::string reason;
  };
  for (const Case& c : {
           Case{"{'descr': '<f4', 'shape': (2,), }", "lacks 'fortran_order'"},
           Case{"{'fortran_order': False, 'shape': (2,), }", "lacks 'descr'"},
           Case{"{'descr': '<f4', 'fortran_order': False}", "lacks 'shape'"},
           Case{"{'descr': '<f4', 'fortran_order': False, 'shape': (2,", "malformed .npy header"},
           Case{"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} extra", "malformed .npy header"},
           Case{"{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}", "unknown name 'false'"},
           Case{"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", "'fortran_order' is not True or False"},
           Case{"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", "non-negative integer"},
           Case{"{'descr': '<f4', 'fortran_order': False, 'shape': 2}", "'shape' is not a tuple"},
           Case{"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "integer too large"},
           Case{"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", "too large"},
           Case{"{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (2,)}", "structured dtypes"},
           Case{"{'descr': '<f4', 'fortran_order': False, 'shape': " + std::string(100, '(') + "}", "nesting too deep"},
       }) {
    const std::string error = parse_error(npy_with_header(c.header, data), "bad.npy");
    EXPECT_EQ(error.rfind("bad.npy: ", 0), 0u) << c.header << " -> " << error;
    EXPECT_NE(error.find(c.reason), std::string::npos) << c.header << " -> " << error;
  }
}

TEST(NpyErrors, RefusesTruncatedAndDamagedFiles) {
  const std::vector<std::byte> good = from_hex(kFloat32_2x3);
  ASSERT_EQ(parse_error(good), "");

  EXPECT_NE(parse_error({}).find("empty"), std::string::npos);

  std::vector<std::byte> bad_magic = good;
  bad_magic[1] = static_cast<std::byte>('X');
  EXPECT_NE(parse_error(bad_magic).find("bad magic"), std::string::npos);
  EXPECT_NE(parse_error(from_hex("504b0304")).find("bad magic"), std::string::npos);  // a zip (.npz) file

  std::vector<std::byte> version4 = good;
  version4[6] = std::byte{4};
  EXPECT_NE(parse_error(version4).find("version 4.0 is not supported"), std::string::npos);

  for (std::size_t length : {std::size_t{7}, std::size_t{9}, std::size_t{100}}) {
    const std::vector<std::byte> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(length));
    const std::string error = parse_error(cut);
    EXPECT_NE(error.find("truncated"), std::string::npos) << length << " bytes -> " << error;
  }

  const std::vector<std::byte> short_data(good.begin(), good.end() - 1);
  const std::string short_error = parse_error(short_data);
  EXPECT_NE(short_error.find("truncated: shape (2, 3) of float32 needs 24 bytes of data, the file has 23"),
            std::string::npos)
      << short_error;

  std::vector<std::byte> long_data = good;
  long_data.push_back(std::byte{0});
  EXPECT_NE(parse_error(long_data).find("data size mismatch"), std::string::npos);

  std::vector<std::byte> bad_bool = from_hex(kBool_4);
  bad_bool.back() = std::byte{2};
  EXPECT_NE(parse_error(bad_bool).find("bool element 3 is byte 2"), std::string::npos);
}

TEST_F(NpyFileTest, ErrorsNameTheFile) {
  const std::vector<std::byte> good = from_hex(kFloat32_2x3);
  write_bytes("cut.npy", std::vector<std::byte>(good.begin(), good.end() - 4));
  const std::string cut = read_error("cut.npy");
  EXPECT_EQ(cut.rfind(path("cut.npy") + ": truncated", 0), 0u) << cut;

  write_bytes("text.npy", {std::byte{'h'}, std::byte{'i'}, std::byte{'\n'}});
  const std::string text = read_error("text.npy");
  EXPECT_EQ(text.rfind(path("text.npy") + ": not a .npy file", 0), 0u) << text;

  const std::string missing = read_error("missing.npy");
  EXPECT_EQ(missing.rfind(path("missing.npy") + ": cannot open", 0), 0u) << missing;

  const float value = 1.0f;
  try {
    write_npy(path("no-such-directory/out.npy"), TensorView{DType::kFloat32, {}, &value, sizeof(value)});
    ADD_FAILURE() << "writing into a missing directory succeeded";
  } catch (const std::runtime_error& error) {
    EXPECT_EQ(std::string(error.what()).rfind(path("no-such-directory/out.npy") + ": cannot open for writing", 0), 0u)
        << error.what();
  }
}

TEST_F(NpyFileTest, WriteRefusesAViewWhoseBytesDoNotMatchItsShape) {
  const std::vector<float> values{1.0f, 2.0f, 3.0f};
  const std::vector<std::int64_t> shape{2, 2};
  EXPECT_THROW(write_npy(path("mismatch.npy"), TensorView::of(values, shape)), std::runtime_error);
  EXPECT_FALSE(std::filesystem::exists(path("mismatch.npy"))) << "nothing is written for a refused tensor";
  const std::uint16_t bf16 = 0x3f80;
  EXPECT_THROW(write_npy(path("bf16.npy"), TensorView{DType::kBFloat16, {}, &bf16, sizeof(bf16)}), std::runtime_error);
}

}  // namespace
