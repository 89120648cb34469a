#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "console.hpp"
#include "fake_model.hpp"
#include "text.hpp"

using namespace edgefleet;

namespace {
// Ranks as keras.datasets.imdb.get_word_index() gives them (1 = most frequent).
const text::WordIndex kIndex = text::WordIndex::fromJson(R"({"the":1,"and":2,"a":3,"movie":17,"great":84,"don't":89,"awful":373})");
}  // namespace

TEST_CASE("tokenizing follows Keras' text_to_word_sequence") {
  CHECK(text::tokenize("The movie was GREAT!!! (Really.)  don't\tmiss") ==
        std::vector<std::string>{"the", "movie", "was", "great", "really", "don't", "miss"});
  CHECK(text::tokenize(" ...!? ").empty());
}

TEST_CASE("word ids carry the training offset, a start id, and OOV for unknown words") {
  text::Encoding e;
  e.maxlen = 6;
  const auto r = text::encodeReview("The movie, zyzzyva!", kIndex, e);
  // start=1, the=1+3, movie=17+3, zyzzyva unknown -> oov=2, padded at the front with 0
  CHECK(r.ids == std::vector<int64_t>{0, 0, 1, 4, 20, 2});
  CHECK(r.words == 3);
  CHECK(r.unknown == 1);
  CHECK(r.rare == 0);
}

TEST_CASE("words beyond num_words become OOV and long reviews keep their end") {
  text::Encoding e;
  e.maxlen = 4;
  e.numWords = 100;  // awful = 373 + 3 >= 100
  const auto r = text::encodeReview("a great movie and an awful the", kIndex, e);
  // [1, 6, 87, 20, 5, 2(an), 2(awful), 4] -> the last 4
  CHECK(r.ids == std::vector<int64_t>{5, 2, 2, 4});
  CHECK(r.unknown == 1);
  CHECK(r.rare == 1);
  CHECK(r.dropped == 4);
  e.indexFrom = 0;  // the original program's bug: raw ranks
  CHECK(text::encodeReview("the", kIndex, e).ids.back() == 1);
}

TEST_CASE("a bad word index is refused with the reason") {
  CHECK_THROWS_WITH(text::WordIndex::fromJson("[1,2]"), "the word index must be a JSON object of word -> rank");
  CHECK_THROWS_WITH(text::WordIndex::fromJson(R"({"a":0})"), "the word index gives 'a' the rank 0: ranks are integers from 1");
  CHECK_THROWS_WITH(text::WordIndex::fromJson(R"({"a":"x"})"), doctest::Contains("ranks are integers from 1"));
  CHECK_THROWS_WITH(text::WordIndex::fromJson("{"), doctest::Contains("the word index is not JSON"));
  CHECK_THROWS_WITH(text::WordIndex::fromFile("/nonexistent/index.json"), doctest::Contains("cannot read the word index '/nonexistent/index.json'"));
}

TEST_CASE("the console greets, classifies, survives unknown words and leaves on exit()") {
  text::Encoding e;
  e.maxlen = 8;
  std::vector<int64_t> seen;
  SentimentClassifier classify = [&](const std::vector<int64_t>& ids) {
    seen = ids;
    return ids.back() == 87 ? 0.9 : 0.1;  // "great" last = positive
  };
  std::istringstream in("a great\n\n   \n!!!\nqwertyuiop asdf\nexit()\nnot read\n");
  std::ostringstream out;
  ConsoleOptions options;
  options.banner = "IMDB review sentiment";
  CHECK(runConsole(in, out, kIndex, e, classify, options) == 0);
  const std::string text = out.str();
  CHECK(text.rfind("IMDB review sentiment\nreview> ", 0) == 0);
  CHECK(text.find("positive (p = 0.900)") != std::string::npos);
  CHECK(text.find("no words to classify: type a review, or exit() to leave") != std::string::npos);
  CHECK(text.find("negative (p = 0.100); 2 of 2 words not in the vocabulary") != std::string::npos);
  CHECK(seen == std::vector<int64_t>{0, 0, 0, 0, 0, 1, 2, 2});
  CHECK(text.find("bye\n") != std::string::npos);
  CHECK(text.find("not read") == std::string::npos);
}

TEST_CASE("the console ends at end of input instead of looping") {
  std::istringstream in("a great");  // no newline, then EOF
  std::ostringstream out;
  int calls = 0;
  CHECK(runConsole(in, out, kIndex, {}, [&](const std::vector<int64_t>&) { return ++calls, 0.7; }, {}) == 0);
  CHECK(calls == 1);
  CHECK(out.str() == "review> positive (p = 0.700)\nreview> \n");
}

TEST_CASE("a classifier error is reported and the console goes on") {
  std::istringstream in("the\nthe\n");
  std::ostringstream out;
  int calls = 0;
  auto flaky = [&](const std::vector<int64_t>&) -> double {
    if (++calls == 1) throw std::runtime_error("runtime said no");
    return 0.2;
  };
  CHECK(runConsole(in, out, kIndex, {}, flaky, {}) == 0);
  CHECK(out.str().find("error: runtime said no\n") != std::string::npos);
  CHECK(out.str().find("negative (p = 0.200)") != std::string::npos);
}

TEST_CASE("a model classifier feeds ids in the model's datatype and reads its probability") {
  for (DataType type : {DataType::Int32, DataType::Int64, DataType::Fp32}) {
    testing::SentimentModel model(type, 4, 87);
    CHECK(inspectImdbModel(model.metadata()).maxlen == 4);
    const auto classify = modelClassifier(model, false);
    CHECK(classify({0, 1, 87, 87}) == doctest::Approx(0.5));
    CHECK(model.lastIds() == std::vector<int64_t>{0, 1, 87, 87});
  }
  testing::SentimentModel logits(DataType::Int32, 2, 87);
  CHECK(modelClassifier(logits, true)({87, 87}) == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))));
}

TEST_CASE("models that are not sentiment classifiers are refused with the reason") {
  testing::EchoModel echo("echo", DataType::Int64);
  CHECK_THROWS_WITH(inspectImdbModel(echo.metadata()),
                    "input 'in' is INT64 [-1]: a sentiment model takes INT32, INT64 or FP32 word ids of shape [batch, length]");
  ModelMetadata two{"m", "", {{"a", DataType::Int32, {1, 2}}, {"b", DataType::Int32, {1, 2}}}, {}};
  CHECK_THROWS_WITH(inspectImdbModel(two), doctest::Contains("has 2 inputs"));
}
