// npy.cpp - NumPy format 1.0/2.0/3.0 reader for little-endian integer arrays; no pickles, no objects.
#include "npy.hpp"

#include <cstring>
#include <fstream>

#include "error.hpp"

namespace styleid {

namespace {

std::string header_field(const std::string &header, const std::string &key) {
    size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) return {};
    size_t colon = header.find(':', k);
    if (colon == std::string::npos) return {};
    size_t start = colon + 1;
    while (start < header.size() && header[start] == ' ') ++start;
    size_t end = start;
    if (header[start] == '(') {
        end = header.find(')', start);
        return end == std::string::npos ? std::string() : header.substr(start, end - start + 1);
    }
    while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
    return header.substr(start, end - start);
}

}  // namespace

std::vector<int64_t> read_npy_int(const std::string &path) {
    auto fail = [&](const std::string &why) -> Error {
        return Error(STYLEID_EDGE_ERR_PACK, path + ": " + why +
                     "; rewrite the rank with numpy.save (an integer array) or run `styleid-edge calibrate ranks`");
    };
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(STYLEID_EDGE_ERR_PACK, path + ": rank file cannot be opened (missing from the pack?)");
    char magic[8];
    if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw fail("not a .npy file");
    uint32_t header_len = 0;
    if (magic[6] == 1) {
        unsigned char b[2];
        if (!in.read(reinterpret_cast<char *>(b), 2)) throw fail("truncated header");
        header_len = b[0] | (b[1] << 8);
    } else if (magic[6] == 2 || magic[6] == 3) {
        unsigned char b[4];
        if (!in.read(reinterpret_cast<char *>(b), 4)) throw fail("truncated header");
        header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    } else {
        throw fail("unsupported .npy version");
    }
    if (header_len > (1u << 20)) throw fail("header too large");
    std::string header(header_len, '\0');
    if (!in.read(&header[0], header_len)) throw fail("truncated header");
    std::string descr = header_field(header, "descr");
    std::string order = header_field(header, "fortran_order");
    std::string shape = header_field(header, "shape");
    if (order.find("False") == std::string::npos) throw fail("Fortran-ordered arrays are not supported");
    size_t count = 1;
    {
        std::string digits;
        bool any = false;
        for (char c : shape + ",") {
            if (c >= '0' && c <= '9') {
                digits += c;
            } else if (!digits.empty()) {
                count *= static_cast<size_t>(std::stoull(digits));
                digits.clear();
                any = true;
            }
        }
        if (!any && shape.find("()") == std::string::npos) throw fail("malformed shape " + shape);
    }
    int width = 0;
    bool is_signed = true;
    if (descr.find("<i8") != std::string::npos) width = 8;
    else if (descr.find("<i4") != std::string::npos) width = 4;
    else if (descr.find("<u4") != std::string::npos) { width = 4; is_signed = false; }
    else if (descr.find("<i2") != std::string::npos) width = 2;
    else if (descr.find("<u2") != std::string::npos) { width = 2; is_signed = false; }
    else throw fail("dtype " + descr + " is not a little-endian integer type");
    if (count > (1u << 28)) throw fail("array too large");
    std::vector<char> raw(count * static_cast<size_t>(width));
    if (!raw.empty() && !in.read(raw.data(), static_cast<std::streamsize>(raw.size()))) throw fail("truncated data");
    std::vector<int64_t> out(count);
    for (size_t i = 0; i < count; ++i) {
        const char *p = raw.data() + i * static_cast<size_t>(width);
        if (width == 8) { int64_t v; std::memcpy(&v, p, 8); out[i] = v; }
        else if (width == 4) {
            if (is_signed) { int32_t v; std::memcpy(&v, p, 4); out[i] = v; }
            else { uint32_t v; std::memcpy(&v, p, 4); out[i] = v; }
        } else {
            if (is_signed) { int16_t v; std::memcpy(&v, p, 2); out[i] = v; }
            else { uint16_t v; std::memcpy(&v, p, 2); out[i] = v; }
        }
    }
    return out;
}

}  // namespace styleid
