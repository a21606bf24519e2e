// trt_model.cpp - see trt_model.hpp. Written against the TensorRT 10 and 11 C++ API (IRuntime,
// ICudaEngine, IExecutionContext with named I/O tensors: setInputShape, setTensorAddress, enqueueV3) and
// the CUDA runtime API. Built only with STYLEID_EDGE_WITH_TENSORRT (CMake finds NvInfer.h, libnvinfer and
// the CUDA toolkit); tested where TensorRT and a GPU exist (ctest trt_backend).
#include "trt_model.hpp"

#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>

#include "engine_cache.hpp"
#include "error.hpp"
#include "half.hpp"

namespace styleid {

namespace {

class Logger : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char *msg) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "styleid-edge (TensorRT): %s\n", msg);
    }
};

Logger &trt_logger() {
    static Logger logger;
    return logger;
}

void cuda_check(cudaError_t status, const std::string &what) {
    if (status != cudaSuccess)
        throw Error(STYLEID_EDGE_ERR_INFERENCE, what + ": CUDA error " + cudaGetErrorName(status) + " (" +
                                                    cudaGetErrorString(status) + ")");
}

std::string runtime_version() {
    const int v = getInferLibVersion();
    return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

size_t element_size(nvinfer1::DataType t) { return t == nvinfer1::DataType::kHALF ? 2 : 4; }

class TrtModel : public Model {
public:
    TrtModel(const std::string &onnx_path, const std::string &role, const std::vector<std::string> &inputs,
             const std::vector<std::string> &outputs, const TrtOptions &options)
        : path_(onnx_path), role_(role) {
        try {
            open(inputs, outputs, options);
        } catch (...) {
            release();  // a throwing constructor runs no destructor: free what was allocated so far
            throw;
        }
    }

    ~TrtModel() override { release(); }

private:
    void open(const std::vector<std::string> &inputs, const std::vector<std::string> &outputs,
              const TrtOptions &options) {
        const std::string &onnx_path = path_, &role = role_;
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
            throw Error(STYLEID_EDGE_ERR_ARGUMENT, "device TensorRT: no CUDA GPU is visible (check the driver, "
                                                   "nvidia-smi / tegrastats, CUDA_VISIBLE_DEVICES), or use an "
                                                   "OpenVINO device such as CPU");
        if (options.gpu < 0 || options.gpu >= count)
            throw Error(STYLEID_EDGE_ERR_ARGUMENT, "device TensorRT:" + std::to_string(options.gpu) + ": only " +
                                                       std::to_string(count) + " CUDA GPU(s) visible");
        gpu_ = options.gpu;
        cuda_check(cudaSetDevice(gpu_), "cudaSetDevice");
        cudaDeviceProp prop{};
        cuda_check(cudaGetDeviceProperties(&prop, gpu_), "cudaGetDeviceProperties");
        EngineWanted wanted;
        wanted.role = role;
        wanted.onnx_path = onnx_path;
        wanted.onnx_sha256 = sha256_file(onnx_path);
        wanted.tensorrt = runtime_version();
        wanted.gpu = prop.name;  // as the Python side records it: surrounding spaces stripped
        wanted.gpu.erase(0, wanted.gpu.find_first_not_of(' '));
        wanted.gpu.erase(wanted.gpu.find_last_not_of(' ') + 1);
        wanted.sm = "sm_" + std::to_string(prop.major) + std::to_string(prop.minor);
        wanted.prefer_fp16 = options.prefer_fp16;
        const std::string dir = options.engine_dir.empty() ? default_engine_dir() : options.engine_dir;
        EngineFound found = find_engine(dir, wanted);
        engine_path_ = found.engine;
        describe_ = "TensorRT " + wanted.tensorrt + " on " + wanted.gpu + " (" + wanted.sm + ")" +
                    (found.fp16 ? ", FP16 engine" : "");

        std::ifstream in(found.engine, std::ios::binary);
        std::vector<char> blob((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (blob.empty()) throw Error(STYLEID_EDGE_ERR_MODEL, found.engine + ": cannot read the engine file");
        runtime_.reset(nvinfer1::createInferRuntime(trt_logger()));
        if (!runtime_) throw Error(STYLEID_EDGE_ERR_MODEL, "TensorRT: createInferRuntime failed");
        engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
        if (!engine_)
            throw Error(STYLEID_EDGE_ERR_MODEL, found.engine + ": TensorRT " + wanted.tensorrt + " cannot load this "
                                                "engine (see the TensorRT message above); delete it and rebuild with "
                                                "styleid-edge export tensorrt");
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw Error(STYLEID_EDGE_ERR_MODEL, found.engine + ": createExecutionContext failed (GPU memory?)");
        cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");

        for (const auto &name : inputs) add_io(name, true);
        for (const auto &name : outputs) add_io(name, false);
        if (engine_->getNbIOTensors() != static_cast<int32_t>(io_.size())) {
            std::string have;
            for (int32_t k = 0; k < engine_->getNbIOTensors(); ++k) have += std::string(k ? ", " : "") + engine_->getIOTensorName(k);
            throw Error(STYLEID_EDGE_ERR_MODEL, found.engine + ": the engine's tensors (" + have + ") are not the " +
                                                    role + " model's; rebuild it from this pack (styleid-edge export tensorrt)");
        }
        // output capacities: set every input to its profile maximum and ask for the output shapes
        for (auto &io : io_)
            if (io.input && !context_->setInputShape(io.name.c_str(), to_trt(io.max)))
                throw Error(STYLEID_EDGE_ERR_MODEL, found.engine + ": the engine rejects its own maximum shape for " +
                                                        io.name);
        for (auto &io : io_) {
            if (io.input) continue;
            io.max = from_trt(context_->getTensorShape(io.name.c_str()), io.name);
        }
        for (auto &io : io_) {
            const size_t n = io.max.count();
            cuda_check(cudaMalloc(&io.device, n * element_size(io.type)), "cudaMalloc " + io.name);
            cuda_check(cudaMallocHost(&io.staging, n * element_size(io.type)), "cudaMallocHost " + io.name);
            if (io.type == nvinfer1::DataType::kHALF) io.host.assign(n, 0.f);  // FP32 view of the FP16 staging
            io.data = io.type == nvinfer1::DataType::kHALF ? io.host.data() : static_cast<float *>(io.staging);
            if (!context_->setTensorAddress(io.name.c_str(), io.device))
                throw Error(STYLEID_EDGE_ERR_MODEL, found.engine + ": setTensorAddress failed for " + io.name);
            io.shape = Dims{};
        }
    }

    void release() noexcept {
        if (stream_) cudaStreamSynchronize(stream_);
        for (auto &io : io_) {
            if (io.device) cudaFree(io.device);
            if (io.staging) cudaFreeHost(io.staging);
            io.device = io.staging = nullptr;
            io.data = nullptr;
        }
        context_.reset();
        engine_.reset();
        runtime_.reset();
        if (stream_) cudaStreamDestroy(stream_);
        stream_ = nullptr;
    }

public:
    float *input(size_t i, const Dims &shape) override {
        Io &io = input_io(i);
        if (shape != io.shape) set_shape(io, shape);
        return io.data;
    }

    void set_input(size_t i, const float *data, const Dims &shape) override {
        float *dst = input(i, shape);
        std::memcpy(dst, data, shape.count() * sizeof(float));
    }

    void infer() override {
        cuda_check(cudaSetDevice(gpu_), "cudaSetDevice");
        // output shapes follow from the input shapes: check they fit before the GPU writes anything
        size_t batch = 0, run_batch = 0;  // the callers' batch, and the one the engine runs (padded up to its minimum)
        for (auto &io : io_) {
            if (!io.input) continue;
            if (io.shape.rank == 0) throw Error(STYLEID_EDGE_ERR_INTERNAL, path_ + ": infer() before input " + io.name);
            batch = io.shape.d[0];
            run_batch = io.run.d[0];
        }
        for (auto &io : io_) {
            if (io.input) continue;
            io.shape = from_trt(context_->getTensorShape(io.name.c_str()), io.name);
            if (io.shape.count() > io.max.count())
                throw Error(STYLEID_EDGE_ERR_INTERNAL, path_ + ": output " + io.name + " " + io.shape.str() +
                                                           " exceeds its buffer " + io.max.str());
            if (run_batch != batch && io.shape.rank && io.shape.d[0] == run_batch) io.shape.d[0] = batch;  // unpad
        }
        for (auto &io : io_) {
            if (!io.input) continue;
            const size_t n = io.run.count();
            if (io.type == nvinfer1::DataType::kHALF) floats_to_halves(io.host.data(), static_cast<uint16_t *>(io.staging), n);
            cuda_check(cudaMemcpyAsync(io.device, io.staging, n * element_size(io.type), cudaMemcpyHostToDevice, stream_),
                       path_ + ": copying " + io.name + " to the GPU");
        }
        if (!context_->enqueueV3(stream_)) {
            cudaStreamSynchronize(stream_);  // the input copies may still read the staging buffers
            throw Error(STYLEID_EDGE_ERR_INFERENCE, path_ + ": TensorRT failed running the " + role_ +
                                                        " engine (see the TensorRT message above)");
        }
        for (auto &io : io_) {
            if (io.input) continue;
            cuda_check(cudaMemcpyAsync(io.staging, io.device, io.shape.count() * element_size(io.type),
                                       cudaMemcpyDeviceToHost, stream_),
                       path_ + ": copying " + io.name + " from the GPU");
        }
        cuda_check(cudaStreamSynchronize(stream_), path_ + ": running the " + role_ + " engine");
        for (auto &io : io_)
            if (!io.input && io.type == nvinfer1::DataType::kHALF)
                halves_to_floats(static_cast<const uint16_t *>(io.staging), io.host.data(), io.shape.count());
    }

    TensorView output(size_t i) override {
        size_t k = 0;
        for (auto &io : io_) {
            if (io.input) continue;
            if (k++ == i) return TensorView{io.data, io.shape};
        }
        throw Error(STYLEID_EDGE_ERR_INTERNAL, path_ + ": no output " + std::to_string(i));
    }

    long input_dim(size_t i, size_t dim) const override {
        size_t k = 0;
        for (const auto &io : io_) {
            if (!io.input) continue;
            if (k++ != i) continue;
            const nvinfer1::Dims d = engine_->getTensorShape(io.name.c_str());
            if (static_cast<int>(dim) >= d.nbDims) return -1;
            return d.d[dim] < 0 ? -1 : static_cast<long>(d.d[dim]);
        }
        return -1;
    }

    const std::string &path() const override { return path_; }
    std::string runner() const override { return describe_; }
    size_t max_batch() const override {
        for (const auto &io : io_)
            if (io.input) return io.max.rank ? io.max.d[0] : 0;
        return 0;
    }

private:
    struct Io {
        std::string name;
        bool input = false;
        nvinfer1::DataType type = nvinfer1::DataType::kFLOAT;
        Dims min, max, shape;  // shape: what callers gave (inputs) or read (outputs)
        Dims run;              // inputs: the shape the engine runs, batch padded up to the profile's minimum
        void *device = nullptr;   // max-size device buffer, bound to the context once
        void *staging = nullptr;  // pinned host buffer, max size: the copies to and from the GPU go through it
        std::vector<float> host;  // FP16 tensors only: the FP32 values callers write/read, converted on the host
        float *data = nullptr;    // what callers write (inputs) and read (outputs): staging (FP32) or host (FP16)
    };

    static nvinfer1::Dims to_trt(const Dims &d) {
        nvinfer1::Dims out{};
        out.nbDims = static_cast<int32_t>(d.rank);
        for (size_t i = 0; i < d.rank; ++i) out.d[i] = static_cast<decltype(out.d[0] + 0)>(d.d[i]);
        return out;
    }

    Dims from_trt(const nvinfer1::Dims &d, const std::string &name) const {
        if (d.nbDims < 0 || d.nbDims > 8)
            throw Error(STYLEID_EDGE_ERR_MODEL, engine_path_ + ": tensor " + name + " has no static shape here");
        Dims out;
        out.rank = static_cast<size_t>(d.nbDims);
        for (int i = 0; i < d.nbDims; ++i) {
            if (d.d[i] < 0) throw Error(STYLEID_EDGE_ERR_MODEL, engine_path_ + ": tensor " + name + " is still dynamic");
            out.d[i] = static_cast<size_t>(d.d[i]);
        }
        return out;
    }

    void add_io(const std::string &name, bool input) {
        const nvinfer1::TensorIOMode mode = engine_->getTensorIOMode(name.c_str());
        const nvinfer1::TensorIOMode want = input ? nvinfer1::TensorIOMode::kINPUT : nvinfer1::TensorIOMode::kOUTPUT;
        if (mode != want)
            throw Error(STYLEID_EDGE_ERR_MODEL, engine_path_ + ": the engine has no " + (input ? "input" : "output") +
                                                    " named '" + name + "' for the " + role_ +
                                                    " model; rebuild it from this pack (styleid-edge export tensorrt)");
        Io io;
        io.name = name;
        io.input = input;
        io.type = engine_->getTensorDataType(name.c_str());
        if (io.type != nvinfer1::DataType::kFLOAT && io.type != nvinfer1::DataType::kHALF)
            throw Error(STYLEID_EDGE_ERR_MODEL, engine_path_ + ": tensor " + name + " is neither FP32 nor FP16");
        if (engine_->getTensorFormat(name.c_str()) != nvinfer1::TensorFormat::kLINEAR)
            throw Error(STYLEID_EDGE_ERR_MODEL, engine_path_ + ": tensor " + name + " is not in linear (NCHW) layout; "
                                                "rebuild the engine with styleid-edge export tensorrt");
        if (input) {
            io.min = from_trt(engine_->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMIN), name);
            io.max = from_trt(engine_->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX), name);
        }
        io_.push_back(std::move(io));
    }

    Io &input_io(size_t i) {
        size_t k = 0;
        for (auto &io : io_) {
            if (!io.input) continue;
            if (k++ == i) return io;
        }
        throw Error(STYLEID_EDGE_ERR_INTERNAL, path_ + ": no input " + std::to_string(i));
    }

    // A batch below the profile's minimum (an engine built with --min-batch > 1, or the tail of a video)
    // runs padded up to that minimum: the padding rows are zeroed here and their outputs never reach callers.
    void set_shape(Io &io, const Dims &shape) {
        bool fits = shape.rank == io.max.rank && shape.rank > 0;
        for (size_t k = 0; fits && k < shape.rank; ++k)
            fits = shape.d[k] >= (k ? io.min.d[k] : 1) && shape.d[k] <= io.max.d[k];
        if (!fits)
            throw Error(STYLEID_EDGE_ERR_ARGUMENT, engine_path_ + ": input " + io.name + " shape " + shape.str() +
                                                       " is outside the engine's profile " + io.min.str() + " .. " +
                                                       io.max.str() + "; lower options.batch_size or rebuild with a "
                                                       "larger --max-batch (styleid-edge export tensorrt)");
        Dims run = shape;
        run.d[0] = std::max(shape.d[0], io.min.d[0]);
        if (!context_->setInputShape(io.name.c_str(), to_trt(run)))
            throw Error(STYLEID_EDGE_ERR_INFERENCE, engine_path_ + ": setInputShape " + run.str() + " failed");
        if (run.d[0] > shape.d[0]) std::fill(io.data + shape.count(), io.data + run.count(), 0.f);
        io.shape = shape;
        io.run = run;
    }

    std::string path_, role_, engine_path_, describe_;
    int gpu_ = 0;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    cudaStream_t stream_ = nullptr;
    std::vector<Io> io_;  // inputs in order, then outputs in order
};

}  // namespace

bool tensorrt_available() { return true; }

std::unique_ptr<Model> load_tensorrt_model(const std::string &onnx_path, const std::string &role,
                                           const std::vector<std::string> &inputs,
                                           const std::vector<std::string> &outputs, const TrtOptions &options) {
    return std::make_unique<TrtModel>(onnx_path, role, inputs, outputs, options);
}

}  // namespace styleid
