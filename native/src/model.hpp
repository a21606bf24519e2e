// model.hpp - one ONNX model of the pack compiled by OpenVINO, with the pack's exact input/output names.
#pragma once

#include <string>
#include <vector>

#include <openvino/openvino.hpp>

namespace styleid {

class OvModel {
public:
    // Read and compile `path`; its inputs must be `inputs` (in order) and its outputs must include `outputs`
    // (empty lists: take the model's own). Throws Error(MODEL) naming the file and the fix.
    OvModel(ov::Core &core, const std::string &path, const std::string &role, std::vector<std::string> inputs,
            std::vector<std::string> outputs, const std::string &device, int threads);

    // Bind input i to caller memory (float32, not copied; must stay alive until infer() returns).
    void set_input(size_t i, const float *data, const ov::Shape &shape);
    // Run; throws Error(INFERENCE) naming the model.
    void infer();
    // Output by index into `outputs` (valid until the next infer()).
    ov::Tensor output(size_t i);
    // Static size of dimension `dim` of input i, or -1 when dynamic.
    long input_dim(size_t i, size_t dim) const;
    const std::string &path() const { return path_; }
    const std::vector<std::string> &output_names() const { return outputs_; }

private:
    std::string path_, role_;
    std::vector<std::string> inputs_, outputs_;
    std::vector<ov::PartialShape> input_shapes_;
    ov::CompiledModel compiled_;
    ov::InferRequest request_;
};

}  // namespace styleid
