// A hash for std::string keys that also takes a std::string_view, so that maps of statement
// texts are searched with the caller's view without building a string (heterogeneous lookup,
// together with std::equal_to<>).
#pragma once
#include <cstddef>
#include <functional>
#include <string_view>

namespace maildict::storage {

struct TextHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace maildict::storage
