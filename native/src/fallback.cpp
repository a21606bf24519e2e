// fallback.cpp - see fallback.hpp (rect shape; area downsample to the block grid, nearest upsample).
#include "fallback.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

namespace styleid {

bool pixelate(cv::Mat &frame, const std::array<float, 4> &box, int blocks, double margin) {
    PixelateScratch scratch;
    return pixelate(frame, box, scratch, blocks, margin);
}

bool pixelate(cv::Mat &frame, const std::array<float, 4> &box, PixelateScratch &scratch, int blocks, double margin) {
    for (float v : box)
        if (!std::isfinite(v)) throw std::invalid_argument("pixelate: box must be 4 finite numbers");
    double x1 = std::min(box[0], box[2]), y1 = std::min(box[1], box[3]);
    double x2 = std::max(box[0], box[2]), y2 = std::max(box[1], box[3]);
    double cx = (x1 + x2) / 2.0, cy = (y1 + y2) / 2.0;
    double ax = (x2 - x1) * (0.5 + margin), ay = (y2 - y1) * (0.5 + margin);
    int rx0 = std::max(static_cast<int>(std::floor(cx - ax)), 0);
    int ry0 = std::max(static_cast<int>(std::floor(cy - ay)), 0);
    int rx1 = std::min(static_cast<int>(std::ceil(cx + ax)), frame.cols);
    int ry1 = std::min(static_cast<int>(std::ceil(cy + ay)), frame.rows);
    if (rx1 <= rx0 || ry1 <= ry0) return false;
    cv::Mat roi = frame(cv::Rect(rx0, ry0, rx1 - rx0, ry1 - ry0));
    const int h = roi.rows, w = roi.cols, longer = std::max(h, w);
    int bx = std::max(1, std::min(w, static_cast<int>(std::nearbyint(static_cast<double>(blocks) * w / longer))));
    int by = std::max(1, std::min(h, static_cast<int>(std::nearbyint(static_cast<double>(blocks) * h / longer))));
    cv::Mat &small = scratch.small.fit(by, bx, CV_8UC3);
    scratch.area.resize(roi, small, cv::Size(bx, by));  // = cv::resize INTER_AREA (within 1 level), no heap
    // nearest upsample straight into the ROI, as cv::resize(INTER_NEAREST) picks: sx = floor(x / (w / bx))
    const double ifx = 1.0 / (static_cast<double>(w) / bx), ify = 1.0 / (static_cast<double>(h) / by);
    for (int y = 0; y < h; ++y) {
        const uint8_t *s = small.ptr<uint8_t>(std::min(static_cast<int>(std::floor(y * ify)), by - 1));
        uint8_t *d = roi.ptr<uint8_t>(y);
        for (int x = 0; x < w; ++x) {
            const uint8_t *p = s + 3 * std::min(static_cast<int>(std::floor(x * ifx)), bx - 1);
            d[3 * x] = p[0], d[3 * x + 1] = p[1], d[3 * x + 2] = p[2];
        }
    }
    return true;
}

}  // namespace styleid
