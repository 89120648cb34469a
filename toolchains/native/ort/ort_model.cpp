#include "ort_model.hpp"

#include <onnxruntime_cxx_api.h>

#include <cstring>

namespace edgefleet {

namespace {

struct TypeMapping {
  ONNXTensorElementDataType onnx;
  DataType oip;
};
constexpr TypeMapping kTypes[] = {
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, DataType::Bool},     {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, DataType::Uint8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, DataType::Uint16}, {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, DataType::Uint32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64, DataType::Uint64}, {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, DataType::Int8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, DataType::Int16},   {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, DataType::Int32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, DataType::Int64},   {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, DataType::Fp16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, DataType::Fp32},    {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, DataType::Fp64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, DataType::Bytes},
};

std::optional<DataType> toOip(ONNXTensorElementDataType t) {
  for (const auto& m : kTypes)
    if (m.onnx == t) return m.oip;
  return std::nullopt;
}

ONNXTensorElementDataType toOnnx(DataType t) {
  for (const auto& m : kTypes)
    if (m.oip == t) return m.onnx;
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

TensorSpec specOf(const std::string& name, const Ort::TypeInfo& info, const std::string& model) {
  if (info.GetONNXType() != ONNX_TYPE_TENSOR)
    throw std::runtime_error("model '" + model + "': '" + name + "' is not a tensor (sequences and maps are not served)");
  const auto tensor = info.GetTensorTypeAndShapeInfo();
  const auto type = toOip(tensor.GetElementType());
  if (!type) throw std::runtime_error("model '" + model + "': '" + name + "' has an element type the Open Inference Protocol cannot carry");
  return TensorSpec{name, *type, tensor.GetShape()};  // symbolic dimensions come back as -1
}

class OrtModel : public Model {
 public:
  OrtModel(Ort::Env& env, const std::string& name, const std::string& path, const LoadOptions& options)
      : session_(env, path.c_str(), sessionOptions(options)) {
    meta_.name = name;
    meta_.platform = "onnxruntime_onnx";
    Ort::AllocatorWithDefaultOptions allocator;
    for (std::size_t i = 0; i < session_.GetInputCount(); ++i)
      meta_.inputs.push_back(specOf(session_.GetInputNameAllocated(i, allocator).get(), session_.GetInputTypeInfo(i), name));
    for (std::size_t i = 0; i < session_.GetOutputCount(); ++i)
      meta_.outputs.push_back(specOf(session_.GetOutputNameAllocated(i, allocator).get(), session_.GetOutputTypeInfo(i), name));
  }

  const ModelMetadata& metadata() const override { return meta_; }

  std::vector<Tensor> infer(const std::vector<Tensor>& inputs, const std::vector<std::string>& wanted) override {
    std::vector<const char*> inputNames, outputNames;
    std::vector<Ort::Value> values;
    for (const Tensor& t : inputs) {
      inputNames.push_back(t.name.c_str());
      values.push_back(toValue(t));
    }
    std::vector<std::string> names = wanted;
    if (names.empty())
      for (const auto& spec : meta_.outputs) names.push_back(spec.name);
    for (const auto& n : names) outputNames.push_back(n.c_str());
    std::vector<Ort::Value> results;
    try {
      results = session_.Run(Ort::RunOptions{nullptr}, inputNames.data(), values.data(), values.size(),
                             outputNames.data(), outputNames.size());
    } catch (const Ort::Exception& e) {
      throw InferenceFailed(e.what());
    }
    std::vector<Tensor> out;
    for (std::size_t i = 0; i < results.size(); ++i) out.push_back(fromValue(names[i], results[i]));
    return out;
  }

 private:
  static Ort::SessionOptions sessionOptions(const LoadOptions& options) {
    Ort::SessionOptions so;
    so.SetIntraOpNumThreads(options.intraOpThreads);
    so.SetInterOpNumThreads(1);
    // Idle cores must stay idle on a board that shares them with other work.
    so.AddConfigEntry("session.intra_op.allow_spinning", "0");
    so.AddConfigEntry("session.inter_op.allow_spinning", "0");
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    return so;
  }

  Ort::Value toValue(const Tensor& t) {
    if (t.type == DataType::Bytes) {
      Ort::Value v = Ort::Value::CreateTensor(allocator_, t.shape.data(), t.shape.size(), ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING);
      std::vector<const char*> strings;
      for (const auto& s : t.strings) strings.push_back(s.c_str());
      v.FillStringTensor(strings.data(), strings.size());
      return v;
    }
    // The runtime only reads input buffers; its API takes them non-const.
    void* data = const_cast<uint8_t*>(t.raw.data());
    return Ort::Value::CreateTensor(memory_, data, t.raw.size(), t.shape.data(), t.shape.size(), toOnnx(t.type));
  }

  static Tensor fromValue(const std::string& name, Ort::Value& v) {
    if (!v.IsTensor()) throw InferenceFailed("output '" + name + "' is not a tensor");
    const auto info = v.GetTensorTypeAndShapeInfo();
    const auto type = toOip(info.GetElementType());
    if (!type) throw InferenceFailed("output '" + name + "' has an element type the protocol cannot carry");
    Tensor t;
    t.name = name;
    t.type = *type;
    t.shape = info.GetShape();
    const std::size_t count = info.GetElementCount();
    if (t.type == DataType::Bytes) {
      std::string buffer(v.GetStringTensorDataLength(), '\0');
      std::vector<std::size_t> offsets(count);
      v.GetStringTensorContent(buffer.data(), buffer.size(), offsets.data(), offsets.size());
      for (std::size_t i = 0; i < count; ++i) {
        const std::size_t end = i + 1 < count ? offsets[i + 1] : buffer.size();
        t.strings.push_back(buffer.substr(offsets[i], end - offsets[i]));
      }
      return t;
    }
    const std::size_t bytes = count * elementSize(t.type);
    const auto* data = v.GetTensorMutableData<uint8_t>();
    t.raw.assign(data, data + bytes);
    return t;
  }

  Ort::Session session_;
  ModelMetadata meta_;
  Ort::AllocatorWithDefaultOptions allocator_;
  Ort::MemoryInfo memory_ = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
};

class OrtLoader : public ModelLoader {
 public:
  std::unique_ptr<Model> load(const std::string& name, const std::string& path, const LoadOptions& options) override {
    try {
      return std::make_unique<OrtModel>(env_, name, path, options);
    } catch (const Ort::Exception& e) {
      throw std::runtime_error("cannot load model '" + name + "' from " + path + ": " + e.what());
    }
  }
  std::string runtimeVersion() const override { return std::string("onnxruntime ") + OrtGetApiBase()->GetVersionString(); }

 private:
  Ort::Env env_{ORT_LOGGING_LEVEL_WARNING, "edgefleet-infer"};
};

}  // namespace

std::unique_ptr<ModelLoader> makeOrtLoader() { return std::make_unique<OrtLoader>(); }

}  // namespace edgefleet
