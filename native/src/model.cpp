// model.cpp - OpenVINO wrapper: read ONNX, check names, compile in fp32 for parity, infer on reused buffers.
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

ov::Shape to_ov(const Dims &d) { return ov::Shape(d.d.begin(), d.d.begin() + static_cast<long>(d.rank)); }

// false when the shape has more than 8 dimensions (the caller names the tensor: no string is built per call)
bool from_ov(const ov::Shape &s, Dims &d) {
    if (s.size() > d.d.size()) return false;
    d.rank = 0;
    for (size_t v : s) d.d[d.rank++] = v;
    return true;
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

Dims::Dims(std::initializer_list<size_t> dims) {
    if (dims.size() > d.size()) throw Error(STYLEID_EDGE_ERR_INTERNAL, "Dims: more than 8 dimensions");
    for (size_t v : dims) d[rank++] = v;
}

size_t Dims::count() const {
    size_t n = 1;
    for (size_t i = 0; i < rank; ++i) n *= d[i];
    return n;
}

bool Dims::operator==(const Dims &o) const {
    if (rank != o.rank) return false;
    for (size_t i = 0; i < rank; ++i)
        if (d[i] != o.d[i]) return false;
    return true;
}

std::string Dims::str() const {
    std::string s = "(";
    for (size_t i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + ")";
}

OvModel::OvModel(ov::Core &core, const std::string &path, const std::string &role, std::vector<std::string> inputs,
                 std::vector<std::string> outputs, const std::string &device, int threads, bool static_shapes)
    : path_(path), role_(role), device_(device), inputs_(std::move(inputs)), outputs_(std::move(outputs)),
      core_(&core), static_shapes_(static_shapes) {
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
    config_ = ov::AnyMap{ov::hint::inference_precision(ov::element::f32)};
    if (threads > 0) config_.emplace(ov::inference_num_threads.name(), threads);
    if (static_shapes_ && inputs_.size() != 1)
        throw Error(STYLEID_EDGE_ERR_INTERNAL, path + ": static-shape variants need a model with one input");
    if (static_shapes_) {
        model_ = model;  // variants are compiled on first use of each shape; check it compiles now
        ov::PartialShape ps = input_shapes_[0];
        if (ps.is_static()) {
            Dims dims;
            if (!from_ov(ps.to_shape(), dims))
                throw Error(STYLEID_EDGE_ERR_MODEL, path + ": input " + inputs_[0] + " has rank > 8");
            variants_.push_back(compile(model_, dims));
        } else {
            try {
                (void)core.compile_model(model, device, config_);
            } catch (const std::exception &e) {
                throw Error(STYLEID_EDGE_ERR_MODEL, path + ": OpenVINO could not compile the " + role +
                                                        " model for device " + device + " (" +
                                                        std::string(e.what()).substr(0, 400) + ")");
            }
        }
    } else {
        variants_.push_back(compile(model, Dims{}));
    }
    if (!variants_.empty()) current_ = variants_.front().get();
}

std::unique_ptr<OvModel::Variant> OvModel::compile(const std::shared_ptr<ov::Model> &model, const Dims &shape) {
    auto v = std::make_unique<Variant>();
    v->shape = shape;
    try {
        std::shared_ptr<ov::Model> m = model;
        if (shape.rank && !model->input(0).get_partial_shape().is_static()) {
            m = model->clone();
            m->reshape(ov::PartialShape(to_ov(shape)));
        }
        v->compiled = core_->compile_model(m, device_, config_);
        v->request = v->compiled.create_infer_request();
        for (const auto &name : inputs_) v->in_ports.push_back(v->compiled.input(name));
        for (const auto &name : outputs_) v->out_ports.push_back(v->compiled.output(name));
    } catch (const std::exception &e) {
        throw Error(STYLEID_EDGE_ERR_MODEL, path_ + ": OpenVINO could not compile the " + role_ + " model for device " +
                                                device_ + " (" + std::string(e.what()).substr(0, 400) + ")");
    }
    v->own.resize(inputs_.size());
    v->in_dims.resize(inputs_.size());
    v->out_dims.resize(outputs_.size());
    v->last_in.resize(inputs_.size());
    v->bound.assign(inputs_.size(), 0);
    v->wrapped.assign(inputs_.size(), 0);
    return v;
}

OvModel::Variant &OvModel::select(const Dims &input0) {
    if (!static_shapes_) return *current_;
    if (current_ && current_->shape == input0) return *current_;
    Variant *found = nullptr;
    for (auto &v : variants_)
        if (v->shape == input0) found = v.get();
    if (!found) {
        if (variants_.size() >= kMaxVariants) {  // drop the least recently used
            size_t oldest = 0;
            for (size_t k = 1; k < variants_.size(); ++k)
                if (variants_[k]->used < variants_[oldest]->used) oldest = k;
            variants_.erase(variants_.begin() + static_cast<long>(oldest));
        }
        variants_.push_back(compile(model_, input0));
        found = variants_.back().get();
    }
    current_ = found;
    return *found;
}

float *OvModel::input(size_t i, const Dims &shape) {
    if (i >= inputs_.size()) throw Error(STYLEID_EDGE_ERR_INTERNAL, path_ + ": no input " + std::to_string(i));
    Variant &v = i == 0 ? select(shape) : *current_;
    v.used = ++clock_;
    ov::Tensor &t = v.own[i];
    if (!v.bound[i]) {  // the request's own input tensor (the plugin's memory: no copy, no wrapping per infer)
        t = v.request.get_tensor(v.in_ports[i]);
        if (v.wrapped[i]) {  // set_input left the caller's memory bound there: bind memory of our own again
            t = ov::Tensor(ov::element::f32, to_ov(shape));
            v.request.set_tensor(v.in_ports[i], t);
            v.wrapped[i] = 0;
        }
        v.bound[i] = 1;
        if (!from_ov(t.get_shape(), v.in_dims[i])) v.in_dims[i] = Dims{};
    }
    if (shape != v.in_dims[i]) {  // dynamic models: the tensor reallocates only on a new shape
        t.set_shape(to_ov(shape));
        v.in_dims[i] = shape;
    }
    if (shape != v.last_in[i]) v.out_valid = false, v.last_in[i] = shape;
    return t.data<float>();
}

void OvModel::set_input(size_t i, const float *data, const Dims &shape) {
    if (i >= inputs_.size()) throw Error(STYLEID_EDGE_ERR_INTERNAL, path_ + ": no input " + std::to_string(i));
    Variant &v = i == 0 ? select(shape) : *current_;
    v.used = ++clock_;
    ov::Tensor t(ov::element::f32, to_ov(shape), const_cast<float *>(data));
    v.request.set_tensor(v.in_ports[i], t);
    if (shape != v.last_in[i]) v.out_valid = false, v.last_in[i] = shape;
    v.bound[i] = 0;  // input() binds a tensor of its own again
    v.wrapped[i] = 1;
}

void OvModel::infer() {
    if (!current_) throw Error(STYLEID_EDGE_ERR_INTERNAL, path_ + ": infer() before any input was set");
    try {
        current_->request.infer();
    } catch (const std::exception &e) {
        throw Error(STYLEID_EDGE_ERR_INFERENCE, path_ + ": OpenVINO failed running the " + role_ + " model (" +
                                                     std::string(e.what()).substr(0, 400) + ")");
    }
}

TensorView OvModel::output(size_t i) {
    Variant &var = *current_;
    ov::Tensor t = var.request.get_tensor(var.out_ports.at(i));
    if (t.get_element_type() != ov::element::f32)
        throw Error(STYLEID_EDGE_ERR_MODEL, path_ + ": output " + outputs_.at(i) + " is not float32; re-export the pack");
    if (!var.out_valid) {  // output shapes follow the input shapes: read them once per new input shape
        for (size_t k = 0; k < outputs_.size(); ++k)
            if (!from_ov(var.request.get_tensor(var.out_ports[k]).get_shape(), var.out_dims[k]))
                throw Error(STYLEID_EDGE_ERR_MODEL, path_ + ": output " + outputs_.at(k) + " has rank > 8");
        var.out_valid = true;
    }
    TensorView v;
    v.data = t.data<float>();  // the request owns the memory: valid until its next infer()
    v.shape = var.out_dims.at(i);
    return v;
}

long OvModel::input_dim(size_t i, size_t dim) const {
    const auto &ps = input_shapes_.at(i);
    if (ps.rank().is_dynamic() || dim >= static_cast<size_t>(ps.rank().get_length())) return -1;
    return ps[dim].is_static() ? static_cast<long>(ps[dim].get_length()) : -1;
}

}  // namespace styleid
