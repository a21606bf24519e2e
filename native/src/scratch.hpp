// scratch.hpp - a scratch image whose size changes from frame to frame (a face's ROI, a shrunk crop) without a
// heap allocation each time: the pixels live in a buffer that only grows, and the image is a view of it.
// cv::Mat::create on a view of the right size and type is a no-op, so OpenCV functions write into it in place.
#pragma once

#include <cstddef>

#include <opencv2/core.hpp>

namespace styleid {

class ScratchMat {
public:
    // A rows x cols image of `type` (continuous), valid until the next fit(). Grows the buffer by 1.5x
    // when it is too small, so a slowly growing face settles after a few frames.
    cv::Mat &fit(int rows, int cols, int type) {
        const size_t need = static_cast<size_t>(rows) * static_cast<size_t>(cols) * CV_ELEM_SIZE(type);
        if (view_.rows == rows && view_.cols == cols && view_.type() == type && view_.data) return view_;
        if (need > capacity_) {
            capacity_ = need + need / 2;
            storage_.create(1, static_cast<int>(capacity_), CV_8U);
        }
        view_ = cv::Mat(rows, cols, type, storage_.data);
        return view_;
    }
    cv::Mat &fit(cv::Size size, int type) { return fit(size.height, size.width, type); }
    cv::Mat &mat() { return view_; }
    const cv::Mat &mat() const { return view_; }

private:
    cv::Mat storage_, view_;
    size_t capacity_ = 0;
};

}  // namespace styleid
