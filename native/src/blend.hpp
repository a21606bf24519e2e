// blend.hpp - paste a generated face crop back into the frame (runtime/blend.py paste_back, default mask,
// Reinhard LAB colour match), touching only the ROI the crop covers.
#pragma once

#include <opencv2/core.hpp>

#include "resize_area.hpp"
#include "scratch.hpp"

namespace styleid {

struct PasteConfig {
    double erode_frac = 0.10;
    double feather_frac = 0.05;
    bool reinhard = true;
};

// Scratch images of reinhard_lab (kept by the caller: no allocation once the largest size was seen).
struct ReinhardWork {
    ScratchMat fs, fr, lab_s, lab_s_sample, lab_r, bgr;
};

// The stride at which colour statistics sample an image (runtime/blend.py stats_step): 1 up to 255 px, then
// every k-th row and column so that at least 128 of each are read.
int stats_step(int rows, int cols);

// Reusable state: the default mask per crop size and scratch images (no per-frame allocation in steady state).
class Paster {
public:
    explicit Paster(PasteConfig config = {}) : config_(config) {}
    // Blend `crop` (BGR, made with frame -> crop matrix m) into `frame` in place.
    void paste(cv::Mat &frame, const cv::Mat &crop, const cv::Matx23d &m);
    const cv::Mat &default_mask(int h, int w);

private:
    PasteConfig config_;
    cv::Mat mask_;
    // scratch, reused paste to paste: views of buffers that only grow (the ROI size changes as a face moves)
    ScratchMat small_crop_, small_alpha_, original_, alpha_ok_, valid_, colour_, warped_, alpha_, beta_, roi_copy_,
        blended_;
    ReinhardWork reinhard_;
    AreaResizer area_;
    int mask_h_ = -1, mask_w_ = -1;
};

// Give src the LAB mean/std of ref over the pixels where mask != 0 (uint8); returns a new image.
cv::Mat reinhard_lab(const cv::Mat &src, const cv::Mat &ref, const cv::Mat &mask);
// The same into `out` with caller-kept scratch. With step > 1 the source's statistics are read at every step-th
// row and column, and ref and mask are that sample's size: ceil(rows / step) x ceil(cols / step).
void reinhard_lab(const cv::Mat &src, const cv::Mat &ref, const cv::Mat &mask, ReinhardWork &work, cv::Mat &out,
                  int step = 1);

}  // namespace styleid
