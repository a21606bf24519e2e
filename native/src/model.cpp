// model.cpp - OpenVINO wrapper: read ONNX, check names, compile in fp32 for parity, infer on caller memory.
#include "model.hpp"

#include <filesystem>

#include "error.hpp"

namespace styleid {

namespace {

std::string join(const std::vector<std::string> &names) {
    std::string out;
    for (const auto &n : names) out += (out.empty() ? "" : ", ") + n;
    return "(" + out + ")";
}

std::vector<std::string> port_names(const std::vector<ov::Output<ov::Node>> &ports) {
    std::vector<std::string> names;
    for (const auto &p : ports) {
        const auto &all = p.get_names();
        names.push_back(all.empty() ? std::string("?") : p.get_any_name());
    }
    return names;
}

}  // namespace

OvModel::OvModel(ov::Core &core, const std::string &path, const std::string &role, std::vector<std::string> inputs,
                 std::vector<std::string> outputs, const std::string &device, int threads)
    : path_(path), role_(role), inputs_(std::move(inputs)), outputs_(std::move(outputs)) {
    if (!std::filesystem::is_regular_file(path))
        throw Error(STYLEID_EDGE_ERR_MODEL, path + ": " + role + " model file is missing; re-export the pack "
                                                              "(`styleid-edge export`) or fix the path");
    std::shared_ptr<ov::Model> model;
    try {
        model = core.read_model(path);
    } catch (const std::exception &e) {
        throw Error(STYLEID_EDGE_ERR_MODEL, path + ": OpenVINO cannot read this " + role + " model (" +
                                                std::string(e.what()).substr(0, 400) +
                                                "); is it a valid ONNX file? Re-export the pack.");
    }
    std::vector<std::string> have_in = port_names(model->inputs());
    std::vector<std::string> have_out = port_names(model->outputs());
    if (inputs_.empty()) inputs_ = have_in;
    if (outputs_.empty()) outputs_ = have_out;
    if (have_in != inputs_)
        throw Error(STYLEID_EDGE_ERR_MODEL, path + ": inputs " + join(have_in) + ", expected " + join(inputs_) +
                                                " for the " + role + " model; re-export the pack with this "
                                                "styleid-edge version");
    for (const auto &name : outputs_) {
        bool found = false;
        for (const auto &h : have_out) found = found || h == name;
        if (!found)
            throw Error(STYLEID_EDGE_ERR_MODEL, path + ": outputs " + join(have_out) + ", expected '" + name +
                                                    "' for the " + role + " model; re-export the pack");
    }
    for (const auto &in : model->inputs()) input_shapes_.push_back(in.get_partial_shape());
    try {
        ov::AnyMap config{ov::hint::inference_precision(ov::element::f32)};
        if (threads > 0) config.emplace(ov::inference_num_threads.name(), threads);
        compiled_ = core.compile_model(model, device, config);
        request_ = compiled_.create_infer_request();
    } catch (const std::exception &e) {
        throw Error(STYLEID_EDGE_ERR_MODEL, path + ": OpenVINO could not compile the " + role + " model for device " +
                                                device + " (" + std::string(e.what()).substr(0, 400) + ")");
    }
}

void OvModel::set_input(size_t i, const float *data, const ov::Shape &shape) {
    ov::Tensor t(ov::element::f32, shape, const_cast<float *>(data));
    request_.set_tensor(inputs_.at(i), t);
}

void OvModel::infer() {
    try {
        request_.infer();
    } catch (const std::exception &e) {
        throw Error(STYLEID_EDGE_ERR_INFERENCE, path_ + ": OpenVINO failed running the " + role_ + " model (" +
                                                     std::string(e.what()).substr(0, 400) + ")");
    }
}

ov::Tensor OvModel::output(size_t i) { return request_.get_tensor(outputs_.at(i)); }

long OvModel::input_dim(size_t i, size_t dim) const {
    const auto &ps = input_shapes_.at(i);
    if (ps.rank().is_dynamic() || dim >= static_cast<size_t>(ps.rank().get_length())) return -1;
    return ps[dim].is_static() ? static_cast<long>(ps[dim].get_length()) : -1;
}

}  // namespace styleid
