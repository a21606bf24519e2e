// engine_cache.cpp - see engine_cache.hpp. SHA-256 as specified in FIPS 180-4.
#include "engine_cache.hpp"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "error.hpp"
#include "json.hpp"

namespace styleid {

namespace {

constexpr std::array<uint32_t, 64> kRound = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

class Sha256 {
public:
    void update(const uint8_t *p, size_t n) {
        total_ += n;
        while (n > 0) {
            size_t take = std::min(n, sizeof block_ - used_);
            std::memcpy(block_ + used_, p, take);
            used_ += take;
            p += take;
            n -= take;
            if (used_ == sizeof block_) {
                compress(block_);
                used_ = 0;
            }
        }
    }
    std::string hex() {
        const uint64_t bits = total_ * 8;
        const uint8_t one = 0x80, zero = 0;
        update(&one, 1);
        while (used_ != 56) update(&zero, 1);
        uint8_t length[8];
        for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
        update(length, 8);
        std::string out;
        char buf[9];
        for (uint32_t v : h_) {
            std::snprintf(buf, sizeof buf, "%08x", v);
            out += buf;
        }
        return out;
    }

private:
    void compress(const uint8_t *b) {
        uint32_t w[64];
        for (int i = 0; i < 16; ++i)
            w[i] = (uint32_t(b[4 * i]) << 24) | (uint32_t(b[4 * i + 1]) << 16) | (uint32_t(b[4 * i + 2]) << 8) |
                   uint32_t(b[4 * i + 3]);
        for (int i = 16; i < 64; ++i) {
            uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
        for (int i = 0; i < 64; ++i) {
            uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRound[i] + w[i];
            uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = bb;
            bb = a;
            a = t1 + t2;
        }
        h_[0] += a, h_[1] += bb, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
    }

    std::array<uint32_t, 8> h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t block_[64] = {};
    size_t used_ = 0;
    uint64_t total_ = 0;
};

std::string text_member(const JsonValue &doc, const char *key) {
    const JsonValue *v = doc.find(key);
    return v && v->is_string() ? v->text : std::string();
}

}  // namespace

std::string sha256_hex(const void *data, size_t size) {
    Sha256 s;
    s.update(static_cast<const uint8_t *>(data), size);
    return s.hex();
}

std::string sha256_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(STYLEID_EDGE_ERR_MODEL, path + ": cannot read the file to hash it");
    Sha256 s;
    std::vector<char> buf(1 << 20);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        s.update(reinterpret_cast<const uint8_t *>(buf.data()), static_cast<size_t>(in.gcount()));
    }
    return s.hex();
}

std::string default_engine_dir() {
    if (const char *env = std::getenv("STYLEID_EDGE_TRT_CACHE"); env && *env) {
        std::string dir = env;  // "~/x" as Python's expanduser
        if (dir == "~" || dir.rfind("~/", 0) == 0)
            if (const char *home = std::getenv("HOME"); home && *home) dir = home + dir.substr(1);
        return dir;
    }
    std::filesystem::path base;
    if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) base = xdg;
    else if (const char *home = std::getenv("HOME"); home && *home) base = std::filesystem::path(home) / ".cache";
    else base = ".cache";
    return (base / "styleid-edge" / "tensorrt").string();
}

std::string version_prefix(const std::string &version) {
    size_t dots = 0, i = 0;
    for (; i < version.size(); ++i)
        if (version[i] == '.' && ++dots == 3) break;
    return version.substr(0, i);
}

EngineFound find_engine(const std::string &dir, const EngineWanted &w) {
    namespace fs = std::filesystem;
    const std::string build_hint =
        "build it on this machine with: styleid-edge export tensorrt --pack <pack dir>" +
        std::string(w.prefer_fp16 ? " --fp16" : "") + " (TensorRT's Python package on this GPU; JetPack ships it), "
        "and point the runtime at its cache (options.engine_dir, styleid-edge-rt --engine-dir, or "
        "$STYLEID_EDGE_TRT_CACHE)";
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw Error(STYLEID_EDGE_ERR_MODEL, "TensorRT engine cache " + dir + " does not exist, so there is no engine for " +
                                                w.role + " (" + w.onnx_path + "); " + build_hint);
    struct Match {
        EngineFound found;
        fs::file_time_type time;
    };
    std::vector<Match> matches;
    std::vector<std::string> rejected_lines;  // sorted for the message
    const std::string prefix = w.role + "-";
    for (const auto &entry : fs::directory_iterator(dir, ec)) {
        const fs::path p = entry.path();
        const std::string name = p.filename().string();
        if (p.extension() != ".json" || name.rfind(prefix, 0) != 0) continue;
        fs::path engine = p;
        engine.replace_extension(".engine");
        std::string why;
        JsonValue doc;
        try {
            doc = parse_json_file(p.string());
        } catch (const std::exception &e) {
            rejected_lines.push_back(name + ": unreadable (" + e.what() + ")");
            continue;
        }
        if (text_member(doc, "role") != w.role) continue;  // e.g. "mapping-" vs a role named "mapping-x"
        if (!fs::is_regular_file(engine, ec)) why = "its .engine file is missing";
        else if (text_member(doc, "onnx_sha256") != w.onnx_sha256) why = "built from another ONNX file (pack re-exported?)";
        else if (version_prefix(text_member(doc, "tensorrt")) != version_prefix(w.tensorrt))
            why = "built with TensorRT " + text_member(doc, "tensorrt") + ", this is " + w.tensorrt;
        else if (text_member(doc, "gpu") != w.gpu || text_member(doc, "compute_capability") != w.sm)
            why = "built for " + text_member(doc, "gpu") + " (" + text_member(doc, "compute_capability") + "), this is " +
                  w.gpu + " (" + w.sm + ")";
        if (!why.empty()) {
            rejected_lines.push_back(engine.filename().string() + ": " + why);
            continue;
        }
        bool fp16 = false;
        if (const JsonValue *prec = doc.find("precision"); prec && prec->is_object())
            if (const JsonValue *f = prec->find("fp16"); f && f->is_bool()) fp16 = f->boolean;
        matches.push_back({{engine.string(), p.string(), fp16}, fs::last_write_time(p, ec)});
    }
    std::sort(rejected_lines.begin(), rejected_lines.end());
    std::string rejected;
    for (const auto &line : rejected_lines) rejected += "\n  " + line;
    if (matches.empty())
        throw Error(STYLEID_EDGE_ERR_MODEL, "no TensorRT engine for " + w.role + " (" + w.onnx_path + ", sha256 " +
                                                w.onnx_sha256.substr(0, 16) + ") on " + w.gpu + " (" + w.sm +
                                                "), TensorRT " + w.tensorrt + " in " + dir +
                                                (rejected.empty() ? std::string(": none of that role") : rejected) +
                                                "\n" + build_hint);
    std::stable_sort(matches.begin(), matches.end(), [&](const Match &a, const Match &b) {
        if (a.found.fp16 != b.found.fp16) return a.found.fp16 == w.prefer_fp16;
        return a.time > b.time;
    });
    return matches.front().found;
}

}  // namespace styleid
