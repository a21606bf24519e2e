// fallback.hpp - fail-closed obscuring: pixelate a face box (plus margin) in place (runtime/fallback.py).
#pragma once

#include <array>

#include <opencv2/core.hpp>

#include "resize_area.hpp"
#include "scratch.hpp"

namespace styleid {

// Mosaic box (x1, y1, x2, y2) grown by `margin` of its size on each side with at most `blocks` tiles along
// the longer side. Returns false when the box lies outside the frame; throws on a non-finite box.
bool pixelate(cv::Mat &frame, const std::array<float, 4> &box, int blocks = 8, double margin = 0.25);
// Scratch kept by the caller: no heap allocation once the largest box was seen.
struct PixelateScratch {
    AreaResizer area;
    ScratchMat small;
};
// The same with caller-kept scratch.
bool pixelate(cv::Mat &frame, const std::array<float, 4> &box, PixelateScratch &scratch, int blocks = 8,
              double margin = 0.25);

}  // namespace styleid
