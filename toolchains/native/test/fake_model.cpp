#include "fake_model.hpp"

#include <filesystem>

namespace edgefleet::testing {

AffineModel::AffineModel(std::string name) {
  meta_ = {std::move(name), "fake", {{"x", DataType::Fp32, {-1, 3}}}, {{"y", DataType::Fp32, {-1, 3}}, {"rowsum", DataType::Fp32, {-1}}}};
}

std::vector<Tensor> AffineModel::infer(const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs) {
  ++calls;
  const std::vector<float> x = inputs.at(0).values<float>();
  std::vector<float> y, sums;
  for (std::size_t i = 0; i < x.size(); ++i) {
    y.push_back(2 * x[i] + 1);
    if (i % 3 == 0) sums.push_back(0);
    sums.back() += x[i];
  }
  std::vector<Tensor> out;
  const bool all = outputs.empty();
  for (const std::string name : {"y", "rowsum"}) {
    bool wanted = all;
    for (const auto& o : outputs) wanted = wanted || o == name;
    if (!wanted) continue;
    if (name == std::string("y")) out.push_back(Tensor::of("y", DataType::Fp32, inputs[0].shape, y));
    else out.push_back(Tensor::of("rowsum", DataType::Fp32, {inputs[0].shape[0]}, sums));
  }
  return out;
}

EchoModel::EchoModel(std::string name, DataType type) {
  meta_ = {std::move(name), "fake", {{"in", type, {-1}}}, {{"out", type, {-1}}}};
}

std::vector<Tensor> EchoModel::infer(const std::vector<Tensor>& inputs, const std::vector<std::string>&) {
  Tensor out = inputs.at(0);
  out.name = "out";
  return {out};
}

FailingModel::FailingModel() { meta_ = {"failing", "fake", {{"x", DataType::Fp32, {1}}}, {{"y", DataType::Fp32, {1}}}}; }

std::vector<Tensor> FailingModel::infer(const std::vector<Tensor>&, const std::vector<std::string>&) {
  throw InferenceFailed("Gather: index 7 is out of bounds");
}

SentimentModel::SentimentModel(DataType type, int64_t length, int64_t positiveId) : positiveId_(positiveId) {
  meta_ = {"sentiment", "fake", {{"ids", type, {1, length}}}, {{"prob", DataType::Fp32, {1, 1}}}};
}

std::vector<Tensor> SentimentModel::infer(const std::vector<Tensor>& inputs, const std::vector<std::string>&) {
  const Tensor& in = inputs.at(0);
  std::vector<int64_t> ids;
  if (in.type == DataType::Int64) ids = in.values<int64_t>();
  else if (in.type == DataType::Int32) for (auto v : in.values<int32_t>()) ids.push_back(v);
  else for (auto v : in.values<float>()) ids.push_back(static_cast<int64_t>(v));
  float hits = 0;
  for (auto id : ids) hits += id == positiveId_ ? 1.0f : 0.0f;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    last_ = ids;
  }
  return {Tensor::of("prob", DataType::Fp32, {1, 1}, std::vector<float>{hits / static_cast<float>(ids.size())})};
}

std::vector<int64_t> SentimentModel::lastIds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_;
}

std::unique_ptr<Model> FakeLoader::load(const std::string& name, const std::string& path, const LoadOptions& options) {
  lastThreads = options.intraOpThreads;
  const std::string file = std::filesystem::path(path).filename().string();
  if (file == "affine.onnx") return std::make_unique<AffineModel>(name);
  if (file == "echo-int64.onnx") return std::make_unique<EchoModel>(name, DataType::Int64);
  if (file == "failing.onnx") return std::make_unique<FailingModel>();
  if (file == "sentiment.onnx") return std::make_unique<SentimentModel>(DataType::Int32, 8, 4);
  throw std::runtime_error("cannot load model '" + name + "' from " + path + ": not an ONNX model");
}

}  // namespace edgefleet::testing
