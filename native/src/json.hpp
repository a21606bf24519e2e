// json.hpp - a small JSON reader for manifest.json (objects, arrays, strings, numbers, booleans, null).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace styleid {

struct JsonValue {
    enum class Kind { Null, Bool, Number, String, Array, Object };
    Kind kind = Kind::Null;
    bool boolean = false;
    double number = 0.0;
    bool integral = false;  // written without a fraction or exponent
    std::string text;
    std::vector<JsonValue> items;
    std::map<std::string, JsonValue> members;

    bool is_object() const { return kind == Kind::Object; }
    bool is_array() const { return kind == Kind::Array; }
    bool is_number() const { return kind == Kind::Number; }
    bool is_string() const { return kind == Kind::String; }
    bool is_bool() const { return kind == Kind::Bool; }
    // The member `key` of an object, or nullptr.
    const JsonValue *find(const std::string &key) const;
};

// Parse a whole document; throws std::runtime_error with the byte offset on malformed input.
JsonValue parse_json(const std::string &text);
// Read the file and parse it; throws std::runtime_error when it cannot be read or parsed.
JsonValue parse_json_file(const std::string &path);

}  // namespace styleid
