// backend.cpp - see backend.hpp.
#include "backend.hpp"

#include <cctype>

#include "error.hpp"
#include "trt_model.hpp"

namespace styleid {

bool parse_tensorrt_device(const std::string &device, int *gpu) {
    std::string lower;
    for (char c : device) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.rfind("tensorrt", 0) != 0) return false;
    std::string rest = lower.substr(8);
    int index = 0;
    if (!rest.empty()) {
        if (rest[0] != ':' || rest.size() == 1)
            throw Error(STYLEID_EDGE_ERR_ARGUMENT, "device '" + device + "': write TensorRT or TensorRT:N (N: GPU index)");
        for (size_t i = 1; i < rest.size(); ++i)
            if (!std::isdigit(static_cast<unsigned char>(rest[i])))
                throw Error(STYLEID_EDGE_ERR_ARGUMENT, "device '" + device + "': the GPU index must be a number");
        index = std::stoi(rest.substr(1));
    }
    if (gpu) *gpu = index;
    return true;
}

Backend::Backend(BackendConfig config) : config_(std::move(config)) {
    if (config_.device.empty()) config_.device = "CPU";
    tensorrt_ = parse_tensorrt_device(config_.device, &gpu_);
    ov_device_ = tensorrt_ ? "CPU" : config_.device;
    if (tensorrt_ && !tensorrt_available())
        throw Error(STYLEID_EDGE_ERR_ARGUMENT,
                    "device " + config_.device + ": this libstyleid_edge was built without TensorRT (NvInfer.h, "
                    "libnvinfer and the CUDA toolkit were not found when CMake ran). Rebuild where they are "
                    "installed (Jetson: JetPack; cmake -DSTYLEID_EDGE_TENSORRT=ON fails loudly if they are not "
                    "found), or use an OpenVINO device such as CPU or GPU");
}

std::unique_ptr<Model> Backend::pack_model(const std::string &path, const std::string &role,
                                           const std::vector<std::string> &inputs,
                                           const std::vector<std::string> &outputs) {
    if (tensorrt_) {
        TrtOptions o;
        o.engine_dir = config_.engine_dir;
        o.gpu = gpu_;
        return load_tensorrt_model(path, role, inputs, outputs, o);
    }
    return std::make_unique<OvModel>(core_, path, role, inputs, outputs, ov_device_, config_.threads);
}

#ifndef STYLEID_EDGE_WITH_TENSORRT
bool tensorrt_available() { return false; }

std::unique_ptr<Model> load_tensorrt_model(const std::string &, const std::string &role,
                                           const std::vector<std::string> &, const std::vector<std::string> &,
                                           const TrtOptions &) {
    throw Error(STYLEID_EDGE_ERR_ARGUMENT, role + ": this libstyleid_edge was built without TensorRT");
}
#endif

}  // namespace styleid
