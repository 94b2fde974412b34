#include "io/json_describe.h"

#include <fmt/format.h>

#include <cstdint>
#include <nlohmann/json.hpp>

namespace ic {

std::string describe_json(const nlohmann::json& v) {
  using Json = nlohmann::json;
  switch (v.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::boolean: return fmt::format("a boolean ({})", v.get<bool>());
    case Json::value_t::string: return "a string";
    case Json::value_t::array: return "an array";
    case Json::value_t::object: return "an object";
    case Json::value_t::number_integer: return fmt::format("an integer ({})", v.get<int64_t>());
    case Json::value_t::number_unsigned: return fmt::format("an integer ({})", v.get<uint64_t>());
    case Json::value_t::number_float: return fmt::format("a float ({})", v.get<double>());
    default: return v.type_name();
  }
}

}  // namespace ic
