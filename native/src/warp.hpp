// warp.hpp - affine warps with bilinear interpolation in OpenCV 4.x's fixed-point arithmetic, written so
// that steady-state frames make no heap allocation (cv::warpAffine and cv::remap allocate block buffers on
// every call: ~560 allocations per frame in the latent path).
//
// Arithmetic, as OpenCV 4.6-4.10 defines cv::warpAffine(INTER_LINEAR): the inverse matrix, source
// coordinates in 1/1024 px rounded to 1/32 px, 32x32 bilinear weight tables (Q15 integers for uint8 with
// round-half-up, float for float32), and the border rules of cv::remap. ctest `warp` checks the results
// against cv::warpAffine / cv::remap bit for bit where the installed OpenCV uses that arithmetic.
#pragma once

#include <opencv2/core.hpp>

namespace styleid {

enum class Border { Constant, Replicate, Reflect101 };  // constant is 0

// dst = cv::warpAffine(src, m, size, INTER_LINEAR [| WARP_INVERSE_MAP], border). src: CV_8UC1, CV_8UC3 or
// CV_32FC1. dst is (re)created with cv::Mat::create (no allocation when it already has size and type).
void warp_affine_linear(const cv::Mat &src, cv::Mat &dst, const cv::Matx23d &m, cv::Size size, Border border,
                        bool inverse_map = false);

// dst (CV_8UC1, size) = 255 where cv::warpAffine(INTER_NEAREST) samples a pixel inside a src_size image, else 0:
// the validity mask of a warp of an all-ones image, without the image.
void warp_affine_nearest_inside(cv::Size src_size, cv::Mat &dst, const cv::Matx23d &m, cv::Size size,
                                bool inverse_map = false);

// dst = cv::remap(src, map_xy, map_a, INTER_LINEAR, border) for fixed-point maps (CV_16SC2 integer source
// coordinates, CV_16UC1 indices into the 32x32 weight table), as cv::convertMaps / warpAffine make them.
void remap_linear_fixed(const cv::Mat &src, cv::Mat &dst, const cv::Mat &map_xy, const cv::Mat &map_a, Border border);

// The fixed-point maps cv::warpAffine(INTER_LINEAR) builds for m and size (for remap_linear_fixed).
void warp_affine_maps(const cv::Matx23d &m, cv::Size size, cv::Mat &map_xy, cv::Mat &map_a, bool inverse_map = false);

// The dst -> src matrix cv::warpAffine uses for m (m itself when inverse_map).
cv::Matx23d warp_inverse(const cv::Matx23d &m, bool inverse_map);

// a + b with two's-complement wrap-around, as OpenCV's (SIMD) coordinate arithmetic behaves for coordinates
// millions of pixels away (signed overflow would be undefined behaviour).
inline int wrap_add(int a, int b) {
    return static_cast<int>(static_cast<unsigned>(a) + static_cast<unsigned>(b));
}

}  // namespace styleid
