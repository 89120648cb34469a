// IMDB review text -> the word ids a Keras IMDB model was trained on.
//
// keras.datasets.imdb.load_data(index_from=3) shifts every word's rank in get_word_index()
// by 3 and keeps 0 for padding, 1 for the start of a review and 2 for out-of-vocabulary
// words; each review starts with 1. The original console used the raw rank (off by 3) and
// crashed on a word missing from the index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace edgefleet::text {

struct Encoding {
  int64_t padId = 0;
  int64_t startId = 1;
  int64_t oovId = 2;
  int64_t indexFrom = 3;
  int64_t numWords = 0;  // ids >= numWords become oovId (0: no limit), like load_data(num_words=...)
  std::size_t maxlen = 200;  // pad and truncate at the front, like pad_sequences' defaults
};

class WordIndex {
 public:
  // A JSON object {"word": rank, ...} with ranks >= 1 (keras.datasets.imdb.get_word_index()).
  static WordIndex fromJson(const std::string& json);
  static WordIndex fromFile(const std::string& path);
  std::optional<int64_t> rank(const std::string& word) const;
  std::size_t size() const { return ranks_.size(); }

 private:
  std::unordered_map<std::string, int64_t> ranks_;
};

// Keras' text_to_word_sequence defaults: lower-case (ASCII), punctuation to spaces, split.
std::vector<std::string> tokenize(const std::string& text);

struct EncodedReview {
  std::vector<int64_t> ids;  // exactly maxlen long
  std::size_t words = 0;     // words in the text
  std::size_t unknown = 0;   // words not in the index, sent as oovId
  std::size_t rare = 0;      // words in the index but beyond numWords, sent as oovId
  std::size_t dropped = 0;   // leading ids cut to fit maxlen
};

EncodedReview encodeReview(const std::string& text, const WordIndex& index, const Encoding& encoding);

}  // namespace edgefleet::text
