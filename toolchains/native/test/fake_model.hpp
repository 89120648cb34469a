// Models for the tests. ONNX Runtime is not linked into the unit tests (they must build and
// run on every target without it), so these stand in for it behind the Model interface;
// the real runtime is tested by toolchains/test/ort.test.ts where its headers are available.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "model.hpp"

namespace edgefleet::testing {

// x FP32 [-1, 3] -> y = 2x + 1 (same shape), rowsum FP32 [-1]
class AffineModel : public Model {
 public:
  explicit AffineModel(std::string name = "affine");
  const ModelMetadata& metadata() const override { return meta_; }
  std::vector<Tensor> infer(const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs) override;
  std::atomic<int> calls{0};

 private:
  ModelMetadata meta_;
};

// "in" of any one datatype, shape [-1] -> "out", the same tensor
class EchoModel : public Model {
 public:
  EchoModel(std::string name, DataType type);
  const ModelMetadata& metadata() const override { return meta_; }
  std::vector<Tensor> infer(const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs) override;

 private:
  ModelMetadata meta_;
};

// Accepts its input, then fails every run, as a runtime does on a bad model.
class FailingModel : public Model {
 public:
  FailingModel();
  const ModelMetadata& metadata() const override { return meta_; }
  std::vector<Tensor> infer(const std::vector<Tensor>&, const std::vector<std::string>&) override;

 private:
  ModelMetadata meta_;
};

// ids [1, length] in `type` -> prob FP32 [1, 1]: the share of ids equal to `positiveId`.
class SentimentModel : public Model {
 public:
  SentimentModel(DataType type, int64_t length, int64_t positiveId);
  const ModelMetadata& metadata() const override { return meta_; }
  std::vector<Tensor> infer(const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs) override;
  std::vector<int64_t> lastIds() const;

 private:
  ModelMetadata meta_;
  int64_t positiveId_;
  mutable std::mutex mutex_;
  std::vector<int64_t> last_;
};

// Paths name the model: "affine.onnx", "echo-int64.onnx", "failing.onnx", "sentiment.onnx";
// any other path fails to load.
class FakeLoader : public ModelLoader {
 public:
  std::unique_ptr<Model> load(const std::string& name, const std::string& path, const LoadOptions& options) override;
  std::string runtimeVersion() const override { return "fake runtime 1"; }
  int lastThreads = 0;
};

}  // namespace edgefleet::testing
