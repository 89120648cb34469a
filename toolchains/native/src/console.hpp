// The interactive IMDB sentiment console of the original program, with its bugs fixed:
// an unknown word is sent as the out-of-vocabulary id instead of crashing, ids carry the
// training offset (index_from), and end of input ends the program instead of looping.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "model.hpp"
#include "text.hpp"

namespace edgefleet {

// Probability that a review (as word ids, maxlen long) is positive.
using SentimentClassifier = std::function<double(const std::vector<int64_t>& ids)>;

struct ConsoleOptions {
  std::string banner;
  std::string prompt = "review> ";
  double threshold = 0.5;
};

// Reads reviews line by line until "exit()" or end of input; returns the exit status (0).
int runConsole(std::istream& in, std::ostream& out, const text::WordIndex& index, const text::Encoding& encoding,
               const SentimentClassifier& classify, const ConsoleOptions& options);

struct ImdbModelShape {
  std::size_t maxlen = 0;  // from the model's input when fixed, else 0
};
// The model's sequence length when its input is [batch, N] with a fixed N; throws when the
// model does not look like a sentiment classifier (one INT32/INT64/FP32 input of rank 2).
ImdbModelShape inspectImdbModel(const ModelMetadata& metadata);

// Feeds ids to `model` as [1, maxlen] in the input's datatype and reads the probability from
// its first output: one value (a probability, or a logit when `logits`), or two ([negative, positive]).
SentimentClassifier modelClassifier(Model& model, bool logits);

}  // namespace edgefleet
