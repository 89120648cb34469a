#include "console.hpp"

#include <cmath>
#include <iomanip>
#include <istream>
#include <ostream>

namespace edgefleet {

namespace {
std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

void describe(std::ostream& out, double p, const text::EncodedReview& review, double threshold) {
  out << (p >= threshold ? "positive" : "negative") << " (p = " << std::fixed << std::setprecision(3) << p << ")";
  std::size_t notKnown = review.unknown + review.rare;
  if (notKnown > 0) out << "; " << notKnown << " of " << review.words << " words not in the vocabulary";
  if (review.dropped > 0) out << "; only the last words were used (" << review.dropped << " cut)";
  out << '\n';
}
}  // namespace

int runConsole(std::istream& in, std::ostream& out, const text::WordIndex& index, const text::Encoding& encoding,
               const SentimentClassifier& classify, const ConsoleOptions& options) {
  if (!options.banner.empty()) out << options.banner << '\n';
  std::string line;
  while (true) {
    out << options.prompt << std::flush;
    if (!std::getline(in, line)) {  // end of input (or a read error): leave, do not spin
      out << '\n';
      return 0;
    }
    const std::string review = trim(line);
    if (review.empty()) continue;
    if (review == "exit()") {
      out << "bye\n";
      return 0;
    }
    const text::EncodedReview encoded = text::encodeReview(review, index, encoding);
    if (encoded.words == 0) {
      out << "no words to classify: type a review, or exit() to leave\n";
      continue;
    }
    try {
      describe(out, classify(encoded.ids), encoded, options.threshold);
    } catch (const std::exception& e) {
      out << "error: " << e.what() << '\n';
    }
  }
}

ImdbModelShape inspectImdbModel(const ModelMetadata& m) {
  if (m.inputs.size() != 1)
    throw std::runtime_error("model '" + m.name + "' has " + std::to_string(m.inputs.size()) +
                             " inputs: a sentiment model takes one, the word ids [batch, length]");
  const TensorSpec& in = m.inputs.front();
  if (in.shape.size() != 2 || !(in.type == DataType::Int32 || in.type == DataType::Int64 || in.type == DataType::Fp32))
    throw std::runtime_error("input '" + in.name + "' is " + dataTypeName(in.type) + " " + shapeText(in.shape) +
                             ": a sentiment model takes INT32, INT64 or FP32 word ids of shape [batch, length]");
  if (m.outputs.empty()) throw std::runtime_error("model '" + m.name + "' has no output");
  return ImdbModelShape{in.shape[1] > 0 ? static_cast<std::size_t>(in.shape[1]) : 0};
}

namespace {
Tensor idsTensor(const TensorSpec& spec, const std::vector<int64_t>& ids) {
  const std::vector<int64_t> shape{1, static_cast<int64_t>(ids.size())};
  if (spec.type == DataType::Int64) return Tensor::of(spec.name, spec.type, shape, ids);
  if (spec.type == DataType::Int32) return Tensor::of(spec.name, spec.type, shape, std::vector<int32_t>(ids.begin(), ids.end()));
  return Tensor::of(spec.name, spec.type, shape, std::vector<float>(ids.begin(), ids.end()));
}

double firstValues(const Tensor& t, std::size_t& count, double& second) {
  count = t.elementCount();
  auto at = [&](std::size_t i) -> double {
    if (t.type == DataType::Fp32) return t.values<float>().at(i);
    if (t.type == DataType::Fp64) return t.values<double>().at(i);
    throw std::runtime_error("output '" + t.name + "' is " + dataTypeName(t.type) + ": expected FP32 or FP64 scores");
  };
  if (count == 0) throw std::runtime_error("output '" + t.name + "' is empty");
  second = count > 1 ? at(1) : 0;
  return at(0);
}
}  // namespace

SentimentClassifier modelClassifier(Model& model, bool logits) {
  inspectImdbModel(model.metadata());
  const TensorSpec input = model.metadata().inputs.front();
  const std::string output = model.metadata().outputs.front().name;
  return [&model, input, output, logits](const std::vector<int64_t>& ids) {
    const std::vector<Tensor> results = runChecked(model, {idsTensor(input, ids)}, {output});
    std::size_t count = 0;
    double second = 0;
    const double first = firstValues(results.at(0), count, second);
    if (count == 2) return second;  // [negative, positive]
    if (count != 1) throw std::runtime_error("output '" + output + "' has " + std::to_string(count) + " values: expected 1 or 2");
    return logits ? 1.0 / (1.0 + std::exp(-first)) : first;
  };
}

}  // namespace edgefleet
