// engine_cache.hpp - finding the TensorRT engine of a pack model in the engine cache that
// `styleid-edge export tensorrt` (Python, styleid_edge/export/tensorrt.py) writes:
//   <dir>/<role>-<key16>.engine  +  <role>-<key16>.json  {"role", "key", "gpu", "compute_capability",
//                                                          "tensorrt", "onnx_sha256", "precision", "profile"}
// The native runtime does not build engines; it loads the one built on this machine for the pack's
// exact ONNX file (sha256), this GPU and this TensorRT version. No TensorRT needed to compile this file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace styleid {

std::string sha256_hex(const void *data, size_t size);
// sha256 of a file's bytes, hex; throws Error(MODEL) when it cannot be read.
std::string sha256_file(const std::string &path);

// $STYLEID_EDGE_TRT_CACHE, else $XDG_CACHE_HOME/styleid-edge/tensorrt, else ~/.cache/styleid-edge/tensorrt
// (the Python runtime's default).
std::string default_engine_dir();

struct EngineWanted {
    std::string role;           // "encoder", "synthesis", ...
    std::string onnx_path;      // for messages
    std::string onnx_sha256;    // hex
    std::string tensorrt;       // this runtime's TensorRT version, "major.minor.patch"
    std::string gpu;            // this GPU's name (cudaDeviceProp::name)
    std::string sm;             // "sm_87"
    bool prefer_fp16 = false;   // several matching engines: take an FP16 one first
};

struct EngineFound {
    std::string engine;   // path of the .engine file
    std::string sidecar;  // its .json
    bool fp16 = false;
};

// The newest matching engine in `dir` (FP16 first when wanted.prefer_fp16). Throws Error(MODEL) when
// there is none, listing each engine of that role found and why it does not fit, and the command that
// builds the right one.
EngineFound find_engine(const std::string &dir, const EngineWanted &wanted);

// "10.8.0.43" -> "10.8.0" (versions compare on major.minor.patch; the build number varies by package)
std::string version_prefix(const std::string &version);

}  // namespace styleid
