// fallback.cpp - see fallback.hpp (rect shape; area downsample to the block grid, nearest upsample).
#include "fallback.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

namespace styleid {

bool pixelate(cv::Mat &frame, const std::array<float, 4> &box, int blocks, double margin) {
    cv::Mat small;
    return pixelate(frame, box, small, blocks, margin);
}

bool pixelate(cv::Mat &frame, const std::array<float, 4> &box, cv::Mat &small, int blocks, double margin) {
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
    cv::resize(roi, small, cv::Size(bx, by), 0, 0, cv::INTER_AREA);
    // nearest upsample straight into the ROI (roi already has the size and type: resize writes in place)
    cv::resize(small, roi, cv::Size(w, h), 0, 0, cv::INTER_NEAREST);
    return true;
}

}  // namespace styleid
