// model.hpp - one ONNX model of the pack compiled by OpenVINO, with the pack's exact input/output names.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

namespace styleid {

class OvModel {
public:
    // Read and compile `path`; its inputs must be `inputs` (in order) and its outputs must include `outputs`
    // (empty lists: take the model's own). Throws Error(MODEL) naming the file and the fix.
    // static_shapes: compile one static-shape copy per input-0 shape met (at most kMaxVariants kept, least
    // recently used dropped) instead of one dynamic model: a dynamic-shape CPU model reallocates its
    // intermediate buffers on every inference whose shape differs from the previous one (the detector's
    // passes alternate shapes), a static one never does.
    OvModel(ov::Core &core, const std::string &path, const std::string &role, std::vector<std::string> inputs,
            std::vector<std::string> outputs, const std::string &device, int threads, bool static_shapes = false);

    // Input i's float32 buffer of `shape`, owned by the model and bound to the request: write the input there.
    // Allocates only when the shape differs from the last call's (steady state: no allocation).
    float *input(size_t i, const ov::Shape &shape);
    // Bind input i to caller memory instead (float32, not copied; must stay alive until infer() returns).
    // Wraps the memory in a new ov::Tensor (allocates): for one-off calls, not the per-frame path.
    void set_input(size_t i, const float *data, const ov::Shape &shape);
    // Run; throws Error(INFERENCE) naming the model.
    void infer();
    // Output by index into `outputs` (valid until the next infer()).
    ov::Tensor output(size_t i);
    // Static size of dimension `dim` of input i, or -1 when dynamic.
    long input_dim(size_t i, size_t dim) const;
    const std::string &path() const { return path_; }
    const std::vector<std::string> &output_names() const { return outputs_; }

    static constexpr size_t kMaxVariants = 6;

private:
    struct Variant {
        ov::Shape shape;  // input 0 (static variants); empty for the dynamic model
        ov::CompiledModel compiled;
        ov::InferRequest request;
        std::vector<ov::Output<const ov::Node>> in_ports, out_ports;
        std::vector<ov::Tensor> own;    // the request's input tensors (valid while bound[i])
        std::vector<char> bound;
        uint64_t used = 0;
    };
    std::unique_ptr<Variant> compile(const std::shared_ptr<ov::Model> &model, const ov::Shape &shape);
    Variant &select(const ov::Shape &input0);

    std::string path_, role_, device_;
    std::vector<std::string> inputs_, outputs_;
    std::vector<ov::PartialShape> input_shapes_;
    ov::Core *core_ = nullptr;
    ov::AnyMap config_;
    std::shared_ptr<ov::Model> model_;  // kept for static variants
    bool static_shapes_ = false;
    std::vector<std::unique_ptr<Variant>> variants_;
    Variant *current_ = nullptr;
    uint64_t clock_ = 0;
};

}  // namespace styleid
