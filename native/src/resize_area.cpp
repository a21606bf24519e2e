// resize_area.cpp - see resize_area.hpp. Separable: each output pixel is the sum over the source pixels its
// footprint [d * scale, (d + 1) * scale) covers, weighted by the covered length / scale, per axis.
#include "resize_area.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

namespace styleid {

void AreaResizer::Axis::build(int src_len, int dst_len) {
    const double scale = static_cast<double>(src_len) / dst_len;
    start.resize(static_cast<size_t>(dst_len) + 1);  // capacity kept: no allocation once the largest size was seen
    index.clear();
    weight.clear();
    for (int d = 0; d < dst_len; ++d) {
        start[d] = static_cast<int>(index.size());
        const double f0 = d * scale, f1 = f0 + scale;
        const int s0 = static_cast<int>(std::floor(f0)), s1 = std::min(src_len, static_cast<int>(std::ceil(f1)));
        for (int s = s0; s < s1; ++s) {
            const double covered = std::min(f1, s + 1.0) - std::max(f0, static_cast<double>(s));
            if (covered <= 1e-9) continue;
            index.push_back(s);
            weight.push_back(static_cast<float>(covered / scale));
        }
    }
    start[dst_len] = static_cast<int>(index.size());
}

template <typename T, int CN>
void AreaResizer::rows(const cv::Mat &src, cv::Mat &dst) {
    const std::vector<int> &xs = x_.start, &xi = x_.index, &ys = y_.start, &yi = y_.index;
    const std::vector<float> &xw = x_.weight, &yw = y_.weight;
    std::vector<float> &row = row_, &acc = acc_;
    const int dw = dst.cols;
    int cached = -1;  // the source row `row` holds: a row on the boundary of two output rows is resized once
    for (int dy = 0; dy < dst.rows; ++dy) {
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int t = ys[dy]; t < ys[dy + 1]; ++t) {
            if (yi[t] != cached) {
                const T *s = src.ptr<T>(yi[t]);
                for (int dx = 0; dx < dw; ++dx) {
                    float v[CN] = {};
                    for (int k = xs[dx]; k < xs[dx + 1]; ++k) {
                        const T *p = s + xi[k] * CN;
                        for (int c = 0; c < CN; ++c) v[c] += static_cast<float>(p[c]) * xw[k];
                    }
                    for (int c = 0; c < CN; ++c) row[dx * CN + c] = v[c];
                }
                cached = yi[t];
            }
            const float w = yw[t];
            for (int i = 0; i < dw * CN; ++i) acc[i] += row[i] * w;
        }
        T *d = dst.ptr<T>(dy);
        for (int i = 0; i < dw * CN; ++i) {
            d[i] = cv::saturate_cast<T>(acc[i]);  // uint8: round half to even, clamp (as cv::resize)
        }
    }
}

void AreaResizer::resize(const cv::Mat &src, cv::Mat &dst, cv::Size size) {
    const int t = src.type();
    if (t != CV_8UC1 && t != CV_8UC3 && t != CV_32FC1)
        throw std::invalid_argument("AreaResizer: only CV_8UC1, CV_8UC3 and CV_32FC1 images");
    if (size.width < 1 || size.height < 1 || size.width > src.cols || size.height > src.rows)
        throw std::invalid_argument("AreaResizer: the output must be non-empty and no larger than the source");
    if (src.data == dst.data) throw std::invalid_argument("AreaResizer: in-place resizes are not supported");
    dst.create(size, t);
    const int k = src.cols / size.width;
    if (src.depth() == CV_8U && k >= 2 && src.cols == k * size.width && src.rows == k * size.height) {
        // an integer factor: cv::resize's fast path sums k x k pixels; 2x rounds half up, others multiply by
        // 1 / k^2 in float and round half to even
        const int cn = src.channels(), n = size.width * cn;
        const float scale = 1.f / static_cast<float>(k * k);
        for (int y = 0; y < size.height; ++y) {
            uint8_t *d = dst.ptr<uint8_t>(y);
            for (int i = 0; i < n; ++i) {
                const int x0 = (i / cn) * k * cn + i % cn;
                int sum = 0;
                for (int r = 0; r < k; ++r) {
                    const uint8_t *row = src.ptr<uint8_t>(k * y + r) + x0;
                    for (int c = 0; c < k; ++c) sum += row[c * cn];
                }
                d[i] = k == 2 ? static_cast<uint8_t>((sum + 2) >> 2) : cv::saturate_cast<uint8_t>(static_cast<float>(sum) * scale);
            }
        }
        return;
    }
    x_.build(src.cols, size.width);
    y_.build(src.rows, size.height);
    const int cn = src.channels();
    row_.resize(static_cast<size_t>(size.width) * cn);
    acc_.resize(static_cast<size_t>(size.width) * cn);
    switch (t) {
        case CV_8UC1: rows<uint8_t, 1>(src, dst); break;
        case CV_8UC3: rows<uint8_t, 3>(src, dst); break;
        default: rows<float, 1>(src, dst); break;
    }
}

}  // namespace styleid
