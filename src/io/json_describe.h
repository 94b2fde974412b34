#pragma once
// What a JSON value is, in words, for the "X is Y, Z expected" messages of the readers of
// config.json and tokenizer.json.
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace ic {

// "null", "a boolean (true)", "a string", "an array", "an object", "an integer (7)",
// "a float (0.5)"; the value is shown for scalars a user can find in the file, not for strings
// (they may be long, and the key already names them).
std::string describe_json(const nlohmann::json& v);

}  // namespace ic
