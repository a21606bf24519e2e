// test_resize_cubic.cpp - CubicResizer (resize_cubic.hpp) against cv::resize(INTER_CUBIC) on uint8 1- and
// 3-channel images: the enlargements generated faces of small packs get (32 -> 256, 64 -> 256), other factors,
// reductions, unequal axes, 1-pixel sources. Bit for bit with OpenCV 4.6-4.10 on x86-64; within 1 grey level
// otherwise.
#include <cstdio>

#include <opencv2/imgproc.hpp>

#include "check.h"
#include "resize_cubic.hpp"

// exact where OpenCV's uint8 cubic kernel runs 128-bit SIMD in float (x86-64's default SSE baseline, as Debian
// builds it); elsewhere (AVX2 baseline, NEON with fused multiply-add, no SIMD) ties may round the other way
#if CV_VERSION_MAJOR == 4 && CV_VERSION_MINOR >= 6 && CV_VERSION_MINOR <= 10 && defined(__x86_64__)
static const double kAllowed = 0;
#else
static const double kAllowed = 1;
#endif

int main() {
    cv::RNG rng(9);
    styleid::CubicResizer reused;
    int cases = 0;
    const cv::Size srcs[] = {cv::Size(32, 32), cv::Size(64, 64), cv::Size(37, 23), cv::Size(1, 5), cv::Size(200, 120)};
    const cv::Size outs[] = {cv::Size(256, 256), cv::Size(100, 77), cv::Size(31, 19), cv::Size(3, 3)};
    for (int type : {CV_8UC3, CV_8UC1})
        for (cv::Size s : srcs)
            for (cv::Size out : outs) {
                cv::Mat img(s, type), want, got;
                rng.fill(img, cv::RNG::UNIFORM, 0, 256);
                cv::resize(img, want, out, 0, 0, cv::INTER_CUBIC);
                reused.resize(img, got, out);
                const double diff = cv::norm(want, got, cv::NORM_INF);
                CHECK(got.size() == out && got.type() == type, "wrong output size/type");
                CHECK(diff <= kAllowed, "type %d %dx%d -> %dx%d: max diff %g", type, s.width, s.height, out.width,
                      out.height, diff);
                ++cases;
            }
    if (failures) return 1;
    std::printf("test_resize_cubic: %d resizes match cv::resize(INTER_CUBIC) of OpenCV %s\n", cases, CV_VERSION);
    return 0;
}
