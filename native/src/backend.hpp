// backend.hpp - where the models run. The options' device string picks it:
//   an OpenVINO device ("CPU", "GPU", "AUTO", ...): every model on OpenVINO;
//   "TensorRT" or "TensorRT:N" (GPU N): the pack's generative models (encoder, mapping, affine, synthesis)
//   on TensorRT engines built by `styleid-edge export tensorrt`, the detector on OpenVINO CPU.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

#include "model.hpp"

namespace styleid {

struct BackendConfig {
    std::string device = "CPU";
    int threads = 0;          // OpenVINO inference threads (0: its default)
    std::string engine_dir;   // TensorRT engine cache (empty: default_engine_dir())
};

// "TensorRT" / "tensorrt:1" -> true and the GPU index; anything else -> false.
bool parse_tensorrt_device(const std::string &device, int *gpu);

class Backend {
public:
    explicit Backend(BackendConfig config);

    // A pack model (role: encoder, mapping, affine, synthesis) on the configured device.
    std::unique_ptr<Model> pack_model(const std::string &path, const std::string &role,
                                      const std::vector<std::string> &inputs, const std::vector<std::string> &outputs);
    // The OpenVINO core and device for the models that always run on OpenVINO (the detector): the
    // configured device, or CPU when the device is TensorRT.
    ov::Core &core() { return core_; }
    const std::string &openvino_device() const { return ov_device_; }
    int threads() const { return config_.threads; }
    bool uses_tensorrt() const { return tensorrt_; }

private:
    void check_openvino_device();

    BackendConfig config_;
    ov::Core core_;
    std::string ov_device_;
    bool tensorrt_ = false;
    int gpu_ = 0;
};

}  // namespace styleid
