// resize_cubic.hpp - bicubic enlargement of 8-bit images (cv::resize INTER_CUBIC, uint8) with no heap allocation
// once the largest sizes were seen: cv::resize allocates its coefficient tables and row buffers on every call.
// Used to enlarge generated faces of packs under 256 px to the crop size. The arithmetic is OpenCV 4.x's
// (A = -0.75 coefficients rounded to Q11, integer horizontal pass, float vertical pass of its 128-bit SIMD
// kernel, as x86-64 builds run it); ctest resize_cubic checks it against cv::resize (bit for bit on x86-64,
// within 1 grey level on other builds of OpenCV).
#pragma once

#include <vector>

#include <opencv2/core.hpp>

namespace styleid {

class CubicResizer {
public:
    // dst (size, src's type) = src resized bicubically. src: CV_8UC1 or CV_8UC3 (throws std::invalid_argument
    // otherwise). dst is created with cv::Mat::create.
    void resize(const cv::Mat &src, cv::Mat &dst, cv::Size size);

private:
    std::vector<int> xofs_;         // per output pixel: the source pixel of tap 1 (taps 0..3: sx - 1 .. sx + 2)
    std::vector<short> alpha_;      // per output pixel: 4 horizontal weights (Q11)
    std::vector<int> rows_[4];      // the 4 horizontally resized source rows of the current output row
    int row_y_[4] = {-1, -1, -1, -1};
};

}  // namespace styleid
