// align.hpp - FFHQ-style face crops from 5 landmarks, and cheap face geometry for fail-closed checks.
#pragma once

#include <array>

#include <opencv2/core.hpp>

#include "resize_area.hpp"
#include "scratch.hpp"

namespace styleid {

using Landmarks = std::array<double, 10>;  // 5 (x, y)

// The FFHQ crop quad: top-left, bottom-left, bottom-right, top-right. Throws on degenerate landmarks.
std::array<cv::Point2d, 4> ffhq_quad(const Landmarks &lm);

// One affine warp to a size x size crop (as runtime/align.py ffhq_crop); returns frame -> crop matrix.
cv::Matx23d ffhq_crop(const cv::Mat &frame, const Landmarks &lm, int size, cv::Mat &crop);
// The same with caller-kept scratch for the pre-shrunk frame of very large faces (reused: no allocation).
cv::Matx23d ffhq_crop(const cv::Mat &frame, const Landmarks &lm, int size, cv::Mat &crop, ScratchMat &small,
                      AreaResizer &area);

// |yaw| proxy in [0, 1] (0 frontal, 1 profile), as runtime/align.py face_quality()["yaw_proxy"].
double yaw_proxy(const Landmarks &lm);

}  // namespace styleid
