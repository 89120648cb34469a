#include "text.hpp"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace edgefleet::text {

WordIndex WordIndex::fromJson(const std::string& text) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(std::string("the word index is not JSON: ") + e.what());
  }
  if (!doc.is_object()) throw std::runtime_error("the word index must be a JSON object of word -> rank");
  WordIndex index;
  index.ranks_.reserve(doc.size());
  for (const auto& [word, rank] : doc.items()) {
    if (!rank.is_number_integer() || rank.get<int64_t>() < 1)
      throw std::runtime_error("the word index gives '" + word + "' the rank " + rank.dump() + ": ranks are integers from 1");
    index.ranks_.emplace(word, rank.get<int64_t>());
  }
  return index;
}

WordIndex WordIndex::fromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read the word index '" + path + "': " + std::strerror(errno));
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return fromJson(buffer.str());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

std::optional<int64_t> WordIndex::rank(const std::string& word) const {
  const auto it = ranks_.find(word);
  if (it == ranks_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> tokenize(const std::string& text) {
  static const char* filters = "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n\r";
  std::vector<std::string> words;
  std::string word;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ' || (c != 0 && std::strchr(filters, c) != nullptr)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word += static_cast<char>(std::tolower(c));
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

EncodedReview encodeReview(const std::string& text, const WordIndex& index, const Encoding& e) {
  EncodedReview out;
  std::vector<int64_t> ids{e.startId};
  for (const std::string& word : tokenize(text)) {
    ++out.words;
    const auto rank = index.rank(word);
    if (!rank) {
      ++out.unknown;
      ids.push_back(e.oovId);
      continue;
    }
    const int64_t id = *rank + e.indexFrom;
    if (e.numWords > 0 && id >= e.numWords) {
      ++out.rare;
      ids.push_back(e.oovId);
      continue;
    }
    ids.push_back(id);
  }
  if (ids.size() > e.maxlen) {
    out.dropped = ids.size() - e.maxlen;
    ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(out.dropped));
  }
  out.ids.assign(e.maxlen - ids.size(), e.padId);
  out.ids.insert(out.ids.end(), ids.begin(), ids.end());
  return out;
}

}  // namespace edgefleet::text
