// Metadata values, value-type names and the ggml type-id table.
#include <fmt/format.h>

#include <limits>

#include "core/error.h"
#include "io/gguf.h"

namespace ic::gguf {

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "unknown";
}

bool value_type_is_integer(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64: return true;
    default: return false;
  }
}

bool value_type_is_float(ValueType t) {
  return t == ValueType::FLOAT32 || t == ValueType::FLOAT64;
}

int64_t Value::size() const {
  if (type != ValueType::ARRAY) return 1;
  if (elem_type == ValueType::STRING) return static_cast<int64_t>(strings.size());
  if (elem_type == ValueType::ARRAY) return static_cast<int64_t>(arrays.size());
  if (value_type_is_float(elem_type)) return static_cast<int64_t>(floats.size());
  return static_cast<int64_t>(ints.size());
}

namespace {

std::string scalar_int_str(ValueType t, int64_t v) {
  if (t == ValueType::BOOL) return v ? "true" : "false";
  if (t == ValueType::UINT64) return fmt::format("{}", static_cast<uint64_t>(v));
  return fmt::format("{}", v);
}

// Strings in listings are cut short and keep control characters visible.
std::string quoted(const std::string& s, size_t max_chars = 60) {
  std::string out = "\"";
  for (size_t k = 0; k < s.size() && k < max_chars; ++k) {
    const unsigned char c = static_cast<unsigned char>(s[k]);
    if (c == '\n') out += "\\n";
    else if (c < 0x20) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  if (s.size() > max_chars) out += "...";
  return out + "\"";
}

}  // namespace

std::string Value::str(int64_t max_elems) const {
  if (type == ValueType::STRING) return quoted(s);
  if (value_type_is_float(type)) return fmt::format("{}", f);
  if (type != ValueType::ARRAY) return scalar_int_str(type, i);
  const int64_t n = size();
  std::string out = "[";
  for (int64_t k = 0; k < n && k < max_elems; ++k) {
    if (k) out += ", ";
    if (elem_type == ValueType::STRING) out += quoted(strings[k], 30);
    else if (elem_type == ValueType::ARRAY) out += arrays[k].str(max_elems);
    else if (value_type_is_float(elem_type)) out += fmt::format("{}", floats[k]);
    else out += scalar_int_str(elem_type, ints[k]);
  }
  if (n > max_elems) out += fmt::format(", ... ({} {})", n, value_type_name(elem_type));
  return out + "]";
}

namespace {

// Range of each integer type; UINT64 is handled separately (its range exceeds int64).
void check_int_range(ValueType t, int64_t v) {
  int64_t lo = 0, hi = 0;
  switch (t) {
    case ValueType::UINT8: lo = 0; hi = 255; break;
    case ValueType::INT8: lo = -128; hi = 127; break;
    case ValueType::UINT16: lo = 0; hi = 65535; break;
    case ValueType::INT16: lo = -32768; hi = 32767; break;
    case ValueType::UINT32: lo = 0; hi = 4294967295LL; break;
    case ValueType::INT32: lo = std::numeric_limits<int32_t>::min(); hi = std::numeric_limits<int32_t>::max(); break;
    case ValueType::UINT64: lo = 0; hi = std::numeric_limits<int64_t>::max(); break;
    case ValueType::INT64: return;
    case ValueType::BOOL: lo = 0; hi = 1; break;
    default: fail("gguf value: {} is not an integer type", value_type_name(t));
  }
  IC_CHECK(v >= lo && v <= hi, "gguf value: {} does not fit in {}", v, value_type_name(t));
}

}  // namespace

Value Value::make_int(ValueType type, int64_t v) {
  check_int_range(type, v);
  Value out;
  out.type = type;
  out.i = v;
  return out;
}

Value Value::make_uint64(uint64_t v) {
  Value out;
  out.type = ValueType::UINT64;
  out.i = static_cast<int64_t>(v);
  return out;
}

Value Value::make_float(ValueType type, double v) {
  IC_CHECK(value_type_is_float(type), "gguf value: {} is not a float type", value_type_name(type));
  Value out;
  out.type = type;
  out.f = type == ValueType::FLOAT32 ? static_cast<double>(static_cast<float>(v)) : v;
  return out;
}

Value Value::make_bool(bool v) {
  Value out;
  out.type = ValueType::BOOL;
  out.i = v ? 1 : 0;
  return out;
}

Value Value::make_string(std::string v) {
  Value out;
  out.type = ValueType::STRING;
  out.s = std::move(v);
  return out;
}

Value Value::make_int_array(ValueType elem, std::vector<int64_t> v) {
  if (elem != ValueType::UINT64)
    for (int64_t x : v) check_int_range(elem, x);
  Value out;
  out.type = ValueType::ARRAY;
  out.elem_type = elem;
  out.ints = std::move(v);
  return out;
}

Value Value::make_bool_array(std::vector<bool> v) {
  Value out;
  out.type = ValueType::ARRAY;
  out.elem_type = ValueType::BOOL;
  out.ints.assign(v.begin(), v.end());
  return out;
}

Value Value::make_float_array(ValueType elem, std::vector<double> v) {
  IC_CHECK(value_type_is_float(elem), "gguf value: {} is not a float type", value_type_name(elem));
  Value out;
  out.type = ValueType::ARRAY;
  out.elem_type = elem;
  if (elem == ValueType::FLOAT32)
    for (double& x : v) x = static_cast<double>(static_cast<float>(x));
  out.floats = std::move(v);
  return out;
}

Value Value::make_string_array(std::vector<std::string> v) {
  Value out;
  out.type = ValueType::ARRAY;
  out.elem_type = ValueType::STRING;
  out.strings = std::move(v);
  return out;
}

Value Value::make_array_array(std::vector<Value> v) {
  for (const Value& e : v)
    IC_CHECK(e.type == ValueType::ARRAY, "gguf value: nested array element is {}, not ARRAY",
             value_type_name(e.type));
  Value out;
  out.type = ValueType::ARRAY;
  out.elem_type = ValueType::ARRAY;
  out.arrays = std::move(v);
  return out;
}

std::string_view ggml_type_name(uint32_t id) {
  // Names only, so errors can say "Q5_K (13)"; ids 4, 5 and 31-33 were removed from ggml.
  switch (id) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 6: return "Q5_0";
    case 7: return "Q5_1";
    case 8: return "Q8_0";
    case 9: return "Q8_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K";
    case 12: return "Q4_K";
    case 13: return "Q5_K";
    case 14: return "Q6_K";
    case 15: return "Q8_K";
    case 16: return "IQ2_XXS";
    case 17: return "IQ2_XS";
    case 18: return "IQ3_XXS";
    case 19: return "IQ1_S";
    case 20: return "IQ4_NL";
    case 21: return "IQ3_S";
    case 22: return "IQ2_S";
    case 23: return "IQ4_XS";
    case 24: return "I8";
    case 25: return "I16";
    case 26: return "I32";
    case 27: return "I64";
    case 28: return "F64";
    case 29: return "IQ1_M";
    case 30: return "BF16";
    case 34: return "TQ1_0";
    case 35: return "TQ2_0";
    case 39: return "MXFP4";
    default: return "";
  }
}

std::optional<DType> dtype_from_ggml(uint32_t id) {
  switch (id) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 2: return DType::Q4_0;
    case 3: return DType::Q4_1;
    case 8: return DType::Q8_0;
    case 12: return DType::Q4_K;
    case 14: return DType::Q6_K;
    case 30: return DType::BF16;
    default: return std::nullopt;
  }
}

uint32_t ggml_from_dtype(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 8;
    case DType::Q4_K: return 12;
    case DType::Q6_K: return 14;
    case DType::BF16: return 30;
    default: fail("dtype {} has no GGUF tensor type", dtype_name(t));
  }
}

}  // namespace ic::gguf
