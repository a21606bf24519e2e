// fixed_warp.hpp - one affine warp applied to many frames of the same size (the detector's rotation passes).
// cv::warpAffine rebuilds its fixed-point coordinate maps on every call, in 64x64 blocks, each block a
// cv::remap with its own temporaries (hundreds of heap allocations per frame). FixedWarp builds the same maps
// once, bit for bit as warpAffine computes them (OpenCV 4.6-4.10 arithmetic), and applies them with our
// allocation-free remap_linear_fixed (warp.hpp): the same pixels (ctest fixed_warp).
#pragma once

#include <opencv2/core.hpp>

namespace styleid {

class FixedWarp {
public:
    // dst = cv::warpAffine(src, m, size, INTER_LINEAR, BORDER_CONSTANT 0). The maps are rebuilt only when m
    // or size change.
    void apply(const cv::Mat &src, cv::Mat &dst, const cv::Matx23d &m, cv::Size size);

private:
    void build(const cv::Matx23d &m, cv::Size size);

    bool ready_ = false;
    cv::Matx23d m_;
    cv::Size size_;
    cv::Mat map1_, map2_;  // CV_16SC2 integer source coordinates, CV_16UC1 interpolation-table indices
};

}  // namespace styleid
