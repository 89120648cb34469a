// The seam between the program and an inference runtime: everything but ort/ sees only this.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor.hpp"

namespace edgefleet {

struct ModelMetadata {
  std::string name;
  std::string platform;  // e.g. "onnxruntime_onnx"
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

// The runtime failed to run a request it had accepted (HTTP 500).
class InferenceFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A loaded model. infer() is called from several threads at once and must be safe for that.
class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelMetadata& metadata() const = 0;
  // `inputs` are already checked against metadata(); `outputs` names the outputs wanted (all when empty).
  virtual std::vector<Tensor> infer(const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs) = 0;
};

struct LoadOptions {
  int intraOpThreads = 1;
};

// Loads a model file; throws std::runtime_error with the reason when it cannot.
class ModelLoader {
 public:
  virtual ~ModelLoader() = default;
  virtual std::unique_ptr<Model> load(const std::string& name, const std::string& path, const LoadOptions& options) = 0;
  // e.g. "onnxruntime 1.20.1"
  virtual std::string runtimeVersion() const = 0;
};

// The models one process serves, by name. Filled before serving starts, read-only afterwards.
class ModelRepository {
 public:
  void add(std::unique_ptr<Model> model);
  Model* find(const std::string& name) const;
  std::vector<std::string> names() const;
  bool empty() const { return models_.empty(); }

 private:
  std::map<std::string, std::unique_ptr<Model>> models_;
};

// Checks inputs and requested outputs against the model, then runs it (what every front end calls).
std::vector<Tensor> runChecked(Model& model, const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs);

}  // namespace edgefleet
