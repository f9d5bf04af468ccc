#include "config_file.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>
#include <vector>

namespace sidecar {
namespace {

bool is_flag(const CLI::Option& option) { return option.get_items_expected_max() == 0; }
bool is_repeatable(const CLI::Option& option) { return option.get_items_expected_max() > 1; }
bool is_integer(const CLI::Option& option) {
  const std::string type = option.get_type_name();
  return type.rfind("INT", 0) == 0 || type.rfind("UINT", 0) == 0;
}

struct BadValue {
  std::string message;
};

// One TOML value as the text a flag would carry. Byte sizes are strings on the command line
// ("64M") and may be plain integers in the file.
std::string scalar_text(const toml::node& node, const CLI::Option& option) {
  if (is_flag(option)) {
    if (const auto* flag = node.as_boolean()) return flag->get() ? "true" : "false";
    throw BadValue{"expected true or false"};
  }
  if (const auto* text = node.as_string()) return text->get();
  if (const auto* number = node.as_integer()) return std::to_string(number->get());
  throw BadValue{std::string("expected a string or an integer, not a ") +
                 (node.is_boolean() ? "boolean" : node.is_array() ? "list" : node.is_table() ? "table" : "value of this type")};
}

std::vector<std::string> value_texts(const toml::node& node, const CLI::Option& option) {
  const auto* list = node.as_array();
  if (list == nullptr) return {scalar_text(node, option)};
  if (!is_repeatable(option)) throw BadValue{"expected one value, not a list (the flag is not repeatable)"};
  std::vector<std::string> texts;
  for (const toml::node& element : *list) texts.push_back(scalar_text(element, option));
  return texts;
}

std::string where(const std::string& path, const toml::source_region& source) {
  return path + ":" + std::to_string(source.begin.line);
}

}  // namespace

bool is_setting(const CLI::Option& option) {
  const std::string key = setting_key(option);
  return !key.empty() && key != "help" && key != "version" && key != "config" && key != "print-config";
}

std::string setting_key(const CLI::Option& option) {
  return option.get_lnames().empty() ? std::string() : option.get_lnames()[0];
}

Done read_config_file(CLI::App& app, const std::string& path, SettingSources& sources) {
  // toml++ reports an unreadable file without saying why.
  if (std::ifstream probe(path); !probe) {
    return {ErrorCode::kInvalidArgument, path + ": cannot read the config file: " + std::strerror(errno)};
  }
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& error) {
    return {ErrorCode::kInvalidArgument, where(path, error.source()) + ": not valid TOML: " + std::string(error.description())};
  }
  for (auto&& [key, node] : table) {
    const std::string name(key.str());
    const std::string at = where(path, key.source());
    CLI::Option* option = app.get_option_no_throw("--" + name);
    if (option == nullptr || !is_setting(*option)) {
      return {ErrorCode::kInvalidArgument,
              at + ": unknown key '" + name + "' (keys are the long flags without their dashes: see --help)"};
    }
    if (option->count() != 0) continue;  // the command line's value wins
    try {
      const std::vector<std::string> texts = value_texts(node, *option);
      // An empty list is the default already, and CLI11 refuses to be given no value.
      if (!texts.empty()) {
        option->add_result(texts);
        option->run_callback();
      }
    } catch (const BadValue& bad) {
      return {ErrorCode::kInvalidArgument, at + ": " + name + ": " + bad.message};
    } catch (const CLI::ParseError& error) {
      return {ErrorCode::kInvalidArgument, at + ": " + name + ": " + error.what()};
    }
    sources[name] = at;
  }
  return {};
}

std::string settings_as_toml(const CLI::App& app) {
  std::ostringstream out;
  for (const CLI::Option* option : app.get_options()) {
    if (!is_setting(*option)) continue;
    const std::string key = setting_key(*option);
    std::vector<std::string> values = option->results();
    if (values.empty() && !is_repeatable(*option)) values.push_back(option->get_default_str());
    out << key << " = ";
    if (is_flag(*option)) {
      out << (!values.empty() && values.back() == "true" ? "true" : "false");
    } else if (is_repeatable(*option)) {
      toml::array list;
      for (const std::string& value : values) list.push_back(value);
      out << list;
    } else if (long long number = 0; is_integer(*option) && (std::istringstream(values.back()) >> number)) {
      out << number;
    } else {
      out << toml::value<std::string>(values.back());
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace sidecar
