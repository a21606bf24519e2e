// model.hpp - one ONNX model of the pack behind a small interface (write inputs, infer, read outputs) with
// the pack's exact input/output names; OvModel runs it on OpenVINO (trt_model.hpp: on TensorRT).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

namespace styleid {

// A tensor shape of up to 8 dimensions on the stack: building one per frame allocates nothing.
struct Dims {
    size_t rank = 0;
    std::array<size_t, 8> d{};
    Dims() = default;
    Dims(std::initializer_list<size_t> dims);
    size_t operator[](size_t i) const { return d[i]; }
    size_t count() const;  // product of the dimensions (1 for rank 0)
    bool operator==(const Dims &o) const;
    bool operator!=(const Dims &o) const { return !(*this == o); }
    std::string str() const;  // "(2, 3, 256, 256)"
};

// A float32 output of the last infer(): valid until the next infer() of the same model.
struct TensorView {
    const float *data = nullptr;
    Dims shape;
    size_t size() const { return shape.count(); }
};

class Model {
public:
    virtual ~Model() = default;
    // Input i's float32 buffer of `shape`, owned by the model: write the input there (no allocation in
    // steady state).
    virtual float *input(size_t i, const Dims &shape) = 0;
    // Bind input i to caller memory instead (float32, must stay alive until infer() returns); for
    // one-off calls, not the per-frame path.
    virtual void set_input(size_t i, const float *data, const Dims &shape) = 0;
    // Run; throws Error(INFERENCE) naming the model.
    virtual void infer() = 0;
    // Output by index into the model's output names.
    virtual TensorView output(size_t i) = 0;
    // Static size of dimension `dim` of input i, or -1 when dynamic.
    virtual long input_dim(size_t i, size_t dim) const = 0;
    virtual const std::string &path() const = 0;
    // What runs it, e.g. "OpenVINO CPU" or "TensorRT 10.8.0 on NVIDIA Orin (sm_87)".
    virtual std::string runner() const = 0;
    // The largest batch (dimension 0 of input 0) it accepts; 0: no limit.
    virtual size_t max_batch() const { return 0; }
};

class OvModel : public Model {
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
    float *input(size_t i, const Dims &shape) override;
    // Bind input i to caller memory instead (float32, not copied; must stay alive until infer() returns).
    // Wraps the memory in a new ov::Tensor (allocates): for one-off calls, not the per-frame path.
    void set_input(size_t i, const float *data, const Dims &shape) override;
    void infer() override;
    TensorView output(size_t i) override;
    long input_dim(size_t i, size_t dim) const override;
    const std::string &path() const override { return path_; }
    std::string runner() const override { return "OpenVINO " + device_; }
    const std::vector<std::string> &output_names() const { return outputs_; }

    static constexpr size_t kMaxVariants = 6;

private:
    struct Variant {
        Dims shape;  // input 0 (static variants); rank 0 for the dynamic model
        ov::CompiledModel compiled;
        ov::InferRequest request;
        std::vector<ov::Output<const ov::Node>> in_ports, out_ports;
        std::vector<ov::Tensor> own;    // the request's input tensors (valid while bound[i])
        std::vector<char> bound;
        std::vector<char> wrapped;  // input bound to caller memory by set_input
        std::vector<Dims> in_dims;  // the shape each bound input tensor has (no get_shape per frame)
        std::vector<Dims> last_in;   // the shape of each input at the last input()/set_input()
        std::vector<Dims> out_dims;  // output shapes, valid while out_valid (no input shape changed since)
        bool out_valid = false;
        uint64_t used = 0;
    };
    std::unique_ptr<Variant> compile(const std::shared_ptr<ov::Model> &model, const Dims &shape);
    Variant &select(const Dims &input0);

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
