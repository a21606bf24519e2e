// fixed_warp.cpp - see fixed_warp.hpp. The maps are warp.hpp's warp_affine_maps (cv::warpAffine's arithmetic).
#include "fixed_warp.hpp"

#include "warp.hpp"

#include <opencv2/imgproc.hpp>

namespace styleid {

void FixedWarp::build(const cv::Matx23d &m, cv::Size size) {
    warp_affine_maps(m, size, map1_, map2_);
    m_ = m;
    size_ = size;
    ready_ = true;
}

void FixedWarp::apply(const cv::Mat &src, cv::Mat &dst, const cv::Matx23d &m, cv::Size size) {
    if (!ready_ || size != size_ || cv::norm(m - m_, cv::NORM_INF) != 0) build(m, size);
    remap_linear_fixed(src, dst, map1_, map2_, Border::Constant);  // cv::remap allocates per call
}

}  // namespace styleid
