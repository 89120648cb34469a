#include "model.hpp"

#include <set>

namespace edgefleet {

void ModelRepository::add(std::unique_ptr<Model> model) {
  const std::string name = model->metadata().name;
  if (models_.count(name)) throw std::runtime_error("model '" + name + "' is given twice: give each model one name");
  models_.emplace(name, std::move(model));
}

Model* ModelRepository::find(const std::string& name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.get();
}

std::vector<std::string> ModelRepository::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : models_) out.push_back(name);
  return out;
}

namespace {
std::string namesOf(const std::vector<TensorSpec>& specs) {
  std::string s;
  for (const auto& spec : specs) s += (s.empty() ? "" : ", ") + spec.name;
  return s;
}
}  // namespace

std::vector<Tensor> runChecked(Model& model, const std::vector<Tensor>& inputs, const std::vector<std::string>& outputs) {
  const ModelMetadata& meta = model.metadata();
  std::set<std::string> seen;
  for (const Tensor& input : inputs) {
    const TensorSpec* spec = nullptr;
    for (const auto& s : meta.inputs)
      if (s.name == input.name) spec = &s;
    if (!spec) throw InvalidInput("model '" + meta.name + "' has no input '" + input.name + "' (inputs: " + namesOf(meta.inputs) + ")");
    if (!seen.insert(input.name).second) throw InvalidInput("input '" + input.name + "' is given twice");
    checkAgainstSpec(input, *spec);
  }
  for (const auto& spec : meta.inputs)
    if (!seen.count(spec.name)) throw InvalidInput("input '" + spec.name + "' is missing (model '" + meta.name + "' needs: " + namesOf(meta.inputs) + ")");
  std::set<std::string> wanted;
  for (const auto& name : outputs) {
    bool known = false;
    for (const auto& s : meta.outputs) known = known || s.name == name;
    if (!known) throw InvalidInput("model '" + meta.name + "' has no output '" + name + "' (outputs: " + namesOf(meta.outputs) + ")");
    if (!wanted.insert(name).second) throw InvalidInput("output '" + name + "' is requested twice");
  }
  return model.infer(inputs, outputs);
}

}  // namespace edgefleet
