// test_engine_cache.cpp - the parts of the TensorRT backend that need no TensorRT: SHA-256 (FIPS 180-4
// test vectors), the engine-cache lookup over sidecars written like styleid_edge/export/tensorrt.py writes
// them, FP16 conversion, and the device-string parsing.
//
//   test_engine_cache SCRATCH_DIR
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "backend.hpp"
#include "engine_cache.hpp"
#include "error.hpp"
#include "half.hpp"
#include "check.h"

namespace fs = std::filesystem;
using namespace styleid;


static void write(const fs::path &p, const std::string &text) {
    std::ofstream out(p, std::ios::binary);
    out << text;
}

static std::string sidecar(const std::string &role, const std::string &sha, const std::string &trt,
                           const std::string &gpu, const std::string &sm, bool fp16) {
    return "{\n  \"role\": \"" + role + "\",\n  \"key\": \"k\",\n  \"gpu\": \"" + gpu + "\",\n  \"compute_capability\": \"" +
           sm + "\",\n  \"tensorrt\": \"" + trt + "\",\n  \"onnx\": \"/p/" + role + ".onnx\",\n  \"onnx_sha256\": \"" + sha +
           "\",\n  \"precision\": {\"fp16\": " + (fp16 ? "true" : "false") +
           ", \"int8\": null, \"typing\": \"weak\"},\n  \"profile\": {\"image\": [[1, 3, 256, 256]]}\n}\n";
}

static void test_sha256(const fs::path &scratch) {
    CHECK(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty");
    CHECK(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 448 bits: padding spills a block
    CHECK(sha256_hex(two, std::strlen(two)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "448 bits");
    std::string million(1000000, 'a');
    CHECK(sha256_hex(million.data(), million.size()) ==
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "a million a");
    const fs::path f = scratch / "million.bin";
    write(f, million);  // the file reader (1 MiB chunks) agrees with the one-shot hash
    CHECK(sha256_file(f.string()) == sha256_hex(million.data(), million.size()), "sha256_file");
    bool threw = false;
    try {
        sha256_file((scratch / "missing.onnx").string());
    } catch (const Error &e) {
        threw = e.status() == STYLEID_EDGE_ERR_MODEL && std::strstr(e.what(), "missing.onnx");
    }
    CHECK(threw, "sha256_file of a missing file throws MODEL naming it");
}

static void test_find_engine(const fs::path &scratch) {
    const fs::path dir = scratch / "engines";
    fs::remove_all(dir);
    fs::create_directories(dir);
    const std::string sha(64, 'a'), other(64, 'b');
    const std::string gpu = "NVIDIA Orin", sm = "sm_87";
    // one fitting FP32 engine, older; one fitting FP16 engine, newer; and one misfit of each kind
    write(dir / "encoder-0000000000000001.json", sidecar("encoder", sha, "10.3.0.26", gpu, sm, false));
    write(dir / "encoder-0000000000000001.engine", "E32");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    write(dir / "encoder-0000000000000002.json", sidecar("encoder", sha, "10.3.0.30", gpu, sm, true));
    write(dir / "encoder-0000000000000002.engine", "E16");
    write(dir / "encoder-0000000000000003.json", sidecar("encoder", other, "10.3.0.26", gpu, sm, false));
    write(dir / "encoder-0000000000000003.engine", "x");
    write(dir / "encoder-0000000000000004.json", sidecar("encoder", sha, "10.4.0.1", gpu, sm, false));
    write(dir / "encoder-0000000000000004.engine", "x");
    write(dir / "encoder-0000000000000005.json", sidecar("encoder", sha, "10.3.0.26", "NVIDIA H100 PCIe", "sm_90", false));
    write(dir / "encoder-0000000000000005.engine", "x");
    write(dir / "encoder-0000000000000006.json", sidecar("encoder", sha, "10.3.0.26", gpu, sm, false));  // no .engine
    write(dir / "encoder-0000000000000007.json", "{ not json");
    write(dir / "synthesis-0000000000000001.json", sidecar("synthesis", sha, "10.3.0.26", gpu, sm, false));
    write(dir / "synthesis-0000000000000001.engine", "S");

    EngineWanted w;
    w.role = "encoder";
    w.onnx_path = "/p/encoder.onnx";
    w.onnx_sha256 = sha;
    w.tensorrt = "10.3.0";
    w.gpu = gpu;
    w.sm = sm;
    w.prefer_fp16 = true;
    EngineFound f = find_engine(dir.string(), w);
    CHECK(fs::path(f.engine).filename() == "encoder-0000000000000002.engine" && f.fp16, "fp16 preferred: %s", f.engine.c_str());
    w.prefer_fp16 = false;
    f = find_engine(dir.string(), w);
    CHECK(fs::path(f.engine).filename() == "encoder-0000000000000001.engine" && !f.fp16, "fp32 preferred: %s", f.engine.c_str());
    w.role = "synthesis";
    f = find_engine(dir.string(), w);
    CHECK(fs::path(f.engine).filename() == "synthesis-0000000000000001.engine", "synthesis: %s", f.engine.c_str());

    // nothing fits: the message lists each candidate and why, and says how to build one
    w.role = "encoder";
    w.tensorrt = "10.5.0";
    std::string msg;
    try {
        find_engine(dir.string(), w);
    } catch (const Error &e) {
        CHECK(e.status() == STYLEID_EDGE_ERR_MODEL, "status %d", e.status());
        msg = e.what();
    }
    CHECK(msg.find("no TensorRT engine for encoder") != std::string::npos, "message: %s", msg.c_str());
    CHECK(msg.find("built with TensorRT 10.3.0.26, this is 10.5.0") != std::string::npos, "message: %s", msg.c_str());
    CHECK(msg.find("styleid-edge export tensorrt --pack") != std::string::npos, "message: %s", msg.c_str());
    w.tensorrt = "10.3.0";
    w.onnx_sha256 = std::string(64, 'c');
    msg.clear();
    try {
        find_engine(dir.string(), w);
    } catch (const Error &e) {
        msg = e.what();
    }
    CHECK(msg.find("built from another ONNX file") != std::string::npos, "message: %s", msg.c_str());
    CHECK(msg.find("encoder-0000000000000006.engine: its .engine file is missing") != std::string::npos, "message: %s",
          msg.c_str());
    CHECK(msg.find("encoder-0000000000000007.json: unreadable") != std::string::npos, "message: %s", msg.c_str());
    w.onnx_sha256 = sha;
    w.gpu = "NVIDIA H100 PCIe";
    w.sm = "sm_90";
    f = find_engine(dir.string(), w);
    CHECK(fs::path(f.engine).filename() == "encoder-0000000000000005.engine", "by GPU: %s", f.engine.c_str());
    msg.clear();
    try {
        find_engine((dir / "nope").string(), w);
    } catch (const Error &e) {
        msg = e.what();
    }
    CHECK(msg.find("does not exist") != std::string::npos, "missing dir: %s", msg.c_str());
    CHECK(version_prefix("10.8.0.43") == "10.8.0" && version_prefix("11.1") == "11.1", "version_prefix");
}

static void test_half() {
    struct Case {
        float f;
        uint16_t h;
    } cases[] = {{0.f, 0x0000},      {-0.f, 0x8000},         {1.f, 0x3c00},       {-2.f, 0xc000},
                 {0.1f, 0x2e66},     {65504.f, 0x7bff},      {65520.f, 0x7c00},   {1e-8f, 0x0000},
                 {5.9604645e-8f, 0x0001}, {6.1035156e-5f, 0x0400}, {0.33333334f, 0x3555},
                 {1.f + 1.f / 2048, 0x3c00} /* tie: to even */, {1.f + 3.f / 2048, 0x3c02} /* tie: to even */,
                 {INFINITY, 0x7c00}, {-INFINITY, 0xfc00}};
    for (const auto &c : cases) {
        uint16_t h = float_to_half(c.f);
        CHECK(h == c.h, "float_to_half(%g) = 0x%04x, want 0x%04x", c.f, h, c.h);
    }
    CHECK(std::isnan(half_to_float(float_to_half(NAN))), "NaN stays NaN");
    // every finite half converts to float and back to itself
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaNs
        if (float_to_half(half_to_float(static_cast<uint16_t>(h))) != h) ++bad;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    CHECK(half_to_float(0x0001) == std::ldexp(1.f, -24) && half_to_float(0x7bff) == 65504.f, "half_to_float");
}

static void test_device() {
    int gpu = -1;
    CHECK(!parse_tensorrt_device("CPU", &gpu) && !parse_tensorrt_device("GPU.0", &gpu), "OpenVINO devices");
    CHECK(parse_tensorrt_device("TensorRT", &gpu) && gpu == 0, "TensorRT");
    CHECK(parse_tensorrt_device("tensorrt:1", &gpu) && gpu == 1, "tensorrt:1");
    bool threw = false;
    try {
        parse_tensorrt_device("TensorRT:x", &gpu);
    } catch (const Error &e) {
        threw = e.status() == STYLEID_EDGE_ERR_ARGUMENT;
    }
    CHECK(threw, "TensorRT:x is an argument error");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    fs::path scratch(argv[1]);
    fs::create_directories(scratch);
    try {
        test_sha256(scratch);
        test_find_engine(scratch);
        test_half();
        test_device();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "FAIL: unexpected exception: %s\n", e.what());
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("test_engine_cache: ok\n");
    return 0;
}
