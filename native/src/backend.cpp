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
    check_openvino_device();
}

// A plain OpenVINO device name ("GPU", "GPU.1", "NPU") that this machine's OpenVINO does not list is refused
// here with the list, instead of a plugin exception per model; AUTO/HETERO/MULTI/BATCH specs are left to OpenVINO.
void Backend::check_openvino_device() {
    const std::string base = ov_device_.substr(0, ov_device_.find_first_of(".:"));
    if (ov_device_ == "CPU" || ov_device_.find(':') != std::string::npos || base == "AUTO" || base == "HETERO" ||
        base == "MULTI" || base == "BATCH")
        return;
    std::vector<std::string> available;
    try {
        available = core_.get_available_devices();
    } catch (const std::exception &) {
        return;  // a plugin that cannot enumerate: let compile_model say what is wrong
    }
    for (const auto &d : available)
        if (d == ov_device_ || d.substr(0, d.find('.')) == ov_device_) return;
    std::string list;
    for (const auto &d : available) list += (list.empty() ? "" : ", ") + d;
    throw Error(STYLEID_EDGE_ERR_ARGUMENT,
                "device " + ov_device_ + ": OpenVINO on this machine has no such device (available: " +
                    (list.empty() ? std::string("none") : list) + "). Install its driver and OpenVINO plugin "
                    "(GPU: the Intel compute runtime; NPU: the NPU driver), or use CPU; TensorRT:N for NVIDIA GPUs");
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
