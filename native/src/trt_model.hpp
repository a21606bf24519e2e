// trt_model.hpp - a pack model on a TensorRT engine (Jetson and other NVIDIA appliances): the engine
// `styleid-edge export tensorrt` built for this GPU, TensorRT version and the pack's exact ONNX file
// (engine_cache.hpp), run with enqueueV3 on a CUDA stream, inputs and outputs staged through pinned
// host buffers allocated once for the engine's largest batch (nothing is allocated per frame).
// Compiled only when TensorRT and the CUDA runtime are found at build time (STYLEID_EDGE_WITH_TENSORRT).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model.hpp"

namespace styleid {

struct TrtOptions {
    std::string engine_dir;   // empty: default_engine_dir()
    int gpu = 0;              // CUDA device index
    bool prefer_fp16 = true;  // several engines for the same model: take an FP16 one
};

// Whether this build of the library has the TensorRT backend.
bool tensorrt_available();

// The pack model `role` (its ONNX at onnx_path, with these input/output names) on TensorRT. Throws
// Error(ARGUMENT) when the library was built without TensorRT, Error(MODEL) when no fitting engine is
// cached (the message says how to build one), Error(INFERENCE) for CUDA errors.
std::unique_ptr<Model> load_tensorrt_model(const std::string &onnx_path, const std::string &role,
                                           const std::vector<std::string> &inputs,
                                           const std::vector<std::string> &outputs, const TrtOptions &options);

}  // namespace styleid
