// blend.hpp - paste a generated face crop back into the frame (runtime/blend.py paste_back, default mask,
// Reinhard LAB colour match), touching only the ROI the crop covers.
#pragma once

#include <opencv2/core.hpp>

namespace styleid {

struct PasteConfig {
    double erode_frac = 0.10;
    double feather_frac = 0.05;
    bool reinhard = true;
};

// Reusable state: the default mask per crop size and scratch images (no per-frame allocation when sizes repeat).
class Paster {
public:
    explicit Paster(PasteConfig config = {}) : config_(config) {}
    // Blend `crop` (BGR, made with frame -> crop matrix m) into `frame` in place.
    void paste(cv::Mat &frame, const cv::Mat &crop, const cv::Matx23d &m);
    const cv::Mat &default_mask(int h, int w);

private:
    PasteConfig config_;
    cv::Mat mask_;
    int mask_h_ = -1, mask_w_ = -1;
};

// Give src the LAB mean/std of ref over the pixels where mask != 0 (uint8 0/1); returns a new image.
cv::Mat reinhard_lab(const cv::Mat &src, const cv::Mat &ref, const cv::Mat &mask);

}  // namespace styleid
