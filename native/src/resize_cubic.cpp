// resize_cubic.cpp - see resize_cubic.hpp.
#include "resize_cubic.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace styleid {

namespace {

constexpr int kCoefBits = 11;  // INTER_RESIZE_COEF_BITS
constexpr int kCoefScale = 1 << kCoefBits;

void cubic_coefficients(float x, float c[4]) {  // Keys' kernel, A = -0.75, evaluated as OpenCV does in float
    const float A = -0.75f;
    c[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
    c[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
    c[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
    c[3] = 1.f - c[0] - c[1] - c[2];
}

short q11(float v) { return cv::saturate_cast<short>(v * kCoefScale); }

// Output index d at source scale `scale`: the source index of tap 1 and the 4 weights in Q11, as cv::resize.
int taps(int d, double scale, short w[4]) {
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    const int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    float c[4];
    cubic_coefficients(f, c);
    for (int k = 0; k < 4; ++k) w[k] = q11(c[k]);
    return s;
}

}  // namespace

void CubicResizer::resize(const cv::Mat &src, cv::Mat &dst, cv::Size size) {
    if (src.type() != CV_8UC1 && src.type() != CV_8UC3) throw std::invalid_argument("CubicResizer: only CV_8UC1 and CV_8UC3 images");
    if (src.empty() || size.width < 1 || size.height < 1) throw std::invalid_argument("CubicResizer: empty image");
    if (src.data == dst.data) throw std::invalid_argument("CubicResizer: in-place resizes are not supported");
    dst.create(size, src.type());
    const int cn = src.channels(), sw = src.cols, sh = src.rows, dw = size.width, dh = size.height;
    const double scale_x = 1. / (static_cast<double>(dw) / sw), scale_y = 1. / (static_cast<double>(dh) / sh);

    // horizontal taps: source pixel sx - 1 .. sx + 2 (clamped to the image), weights in Q11
    xofs_.resize(static_cast<size_t>(dw));
    alpha_.resize(static_cast<size_t>(dw) * 4);
    for (int dx = 0; dx < dw; ++dx) xofs_[dx] = taps(dx, scale_x, &alpha_[dx * 4]);
    const int width = dw * cn;
    for (auto &r : rows_) r.resize(static_cast<size_t>(width));
    for (int &y : row_y_) y = -1;

    auto hresize = [&](int sy, std::vector<int> &out) {
        const uint8_t *s = src.ptr<uint8_t>(sy);
        for (int dx = 0; dx < dw; ++dx) {
            const short *a = &alpha_[dx * 4];
            for (int c = 0; c < cn; ++c) {
                int v = 0;
                for (int j = 0; j < 4; ++j) {
                    const int px = std::min(std::max(xofs_[dx] - 1 + j, 0), sw - 1);
                    v += s[px * cn + c] * a[j];
                }
                out[dx * cn + c] = v;
            }
        }
    };

    const float to_unit = 1.f / (kCoefScale * kCoefScale);
    const int simd_end = width / 8 * 8;  // OpenCV's vector kernel covers whole groups of 8 in float; the rest in integers
    for (int dy = 0; dy < dh; ++dy) {
        short beta[4];
        const int sy0 = taps(dy, scale_y, beta);
        int sy[4], idx[4];
        for (int k = 0; k < 4; ++k) {  // rows sy0 - 1 .. sy0 + 2 clamped; reuse rows already resized
            sy[k] = std::min(std::max(sy0 - 1 + k, 0), sh - 1);
            idx[k] = -1;
            for (int j = 0; j < 4; ++j)
                if (row_y_[j] == sy[k]) idx[k] = j;
        }
        for (int k = 0; k < 4; ++k) {
            if (idx[k] >= 0) continue;
            int slot = 0;  // a slot not used by this output row
            for (; slot < 4; ++slot) {
                bool used = false;
                for (int j = 0; j < 4; ++j) used = used || idx[j] == slot;
                if (!used) break;
            }
            hresize(sy[k], rows_[slot]);
            row_y_[slot] = sy[k];
            idx[k] = slot;
        }
        const int *S0 = rows_[idx[0]].data(), *S1 = rows_[idx[1]].data(), *S2 = rows_[idx[2]].data(),
                  *S3 = rows_[idx[3]].data();
        uint8_t *d = dst.ptr<uint8_t>(dy);
        const float b0 = beta[0] * to_unit, b1 = beta[1] * to_unit, b2 = beta[2] * to_unit, b3 = beta[3] * to_unit;
        for (int x = 0; x < simd_end; ++x) {
            float v = static_cast<float>(S3[x]) * b3;
            v = static_cast<float>(S2[x]) * b2 + v;
            v = static_cast<float>(S1[x]) * b1 + v;
            v = static_cast<float>(S0[x]) * b0 + v;
            d[x] = cv::saturate_cast<uint8_t>(v);  // round half to even, clamp
        }
        for (int x = simd_end; x < width; ++x)
            d[x] = cv::saturate_cast<uint8_t>((S0[x] * beta[0] + S1[x] * beta[1] + S2[x] * beta[2] + S3[x] * beta[3] + (1 << 21)) >> 22);
    }
}

}  // namespace styleid
