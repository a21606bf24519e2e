// test_warp.cpp - our allocation-free warps (warp.hpp) against OpenCV: cv::warpAffine(INTER_LINEAR) for
// uint8 1- and 3-channel and float images, constant / replicate / reflect-101 borders, forward and inverse
// matrices (rotations, shears, shrinks, enlargements, matrices that map partly or wholly outside the
// source, 1-pixel-wide sources); cv::remap on fixed-point maps; and the INTER_NEAREST validity mask.
// Bit for bit where the installed OpenCV computes warpAffine with the 4.x fixed-point arithmetic
// (4.6-4.10, Debian/Ubuntu's libopencv-dev); newer OpenCV (float-coordinate kernels) is compared within
// the 1/32 px quantisation it no longer has.
#include <cmath>
#include <cstdio>

#include <opencv2/imgproc.hpp>

#include "check.h"
#include "warp.hpp"

#if CV_VERSION_MAJOR == 4 && CV_VERSION_MINOR >= 6 && CV_VERSION_MINOR <= 10
static const bool kExact = true;
#else
static const bool kExact = false;
#endif

static int cv_border(styleid::Border b) {
    return b == styleid::Border::Constant ? cv::BORDER_CONSTANT
           : b == styleid::Border::Replicate ? cv::BORDER_REPLICATE : cv::BORDER_REFLECT_101;
}

static double allowed(int type) {
    if (kExact) return 0.0;
    return type == CV_32FC1 ? 0.05 : 12.0;  // 1/32 px on a random image: a fraction of the local step
}

int main() {
    cv::RNG rng(11);
    int cases = 0;
    const styleid::Border borders[] = {styleid::Border::Constant, styleid::Border::Replicate,
                                       styleid::Border::Reflect101};
    std::vector<cv::Matx23d> mats = {
        cv::Matx23d(1, 0, 0, 0, 1, 0),                       // identity
        cv::Matx23d(1, 0, 3.25, 0, 1, -2.5),                 // shift
        cv::Matx23d(0.83, 0.21, 5.5, -0.17, 1.12, -3.25),    // shear
        cv::Matx23d(2.7, 0.4, -40, -0.4, 2.7, -30),          // enlarge (crop -> frame)
        cv::Matx23d(0.31, -0.05, 2, 0.05, 0.31, 1),          // shrink (frame -> crop)
        cv::Matx23d(1, 0, -500, 0, 1, -500),                 // wholly outside
        cv::Matx23d(1, 0, -2097150, 0, 1, 3.5),              // millions of px away: coordinates wrap as OpenCV's
        cv::Matx23d(1e-3, 0, 4e6, 0, 1e-3, -4e6),            // (no signed overflow under UBSan)
    };
    for (int i = 0; i < 6; ++i) {  // random rotations, scales, shifts
        const double a = rng.uniform(-3.2, 3.2), s = rng.uniform(0.3, 3.0);
        mats.emplace_back(s * std::cos(a), -s * std::sin(a), rng.uniform(-30.0, 30.0), s * std::sin(a), s * std::cos(a),
                          rng.uniform(-30.0, 30.0));
    }
    const cv::Size sizes[] = {cv::Size(97, 61), cv::Size(1, 7), cv::Size(5, 1), cv::Size(256, 256)};
    const cv::Size outs[] = {cv::Size(64, 80), cv::Size(3, 3), cv::Size(200, 120)};
    cv::Mat got;  // reused across cases: create() reallocates only on a new size or type
    for (int type : {CV_8UC3, CV_8UC1, CV_32FC1})
        for (cv::Size s : sizes) {
            cv::Mat img(s, type);
            if (type == CV_32FC1) rng.fill(img, cv::RNG::UNIFORM, -1.0, 2.0);
            else rng.fill(img, cv::RNG::UNIFORM, 0, 256);
            for (const auto &m : mats)
                for (cv::Size out : outs)
                    for (auto b : borders)
                        for (bool inverse : {false, true}) {
                            cv::Mat want;
                            cv::warpAffine(img, want, m, out, cv::INTER_LINEAR | (inverse ? cv::WARP_INVERSE_MAP : 0),
                                           cv_border(b), cv::Scalar());
                            styleid::warp_affine_linear(img, got, m, out, b, inverse);
                            const double diff = cv::norm(want, got, cv::NORM_INF);
                            CHECK(got.size() == out && got.type() == type, "wrong output size/type");
                            CHECK(diff <= allowed(type), "type %d %dx%d -> %dx%d border %d inverse %d: max diff %g", type,
                                  s.width, s.height, out.width, out.height, int(b), int(inverse), diff);
                            ++cases;
                        }
        }
    // fixed-point maps (cv::convertMaps of float maps) through remap_linear_fixed vs cv::remap
    {
        cv::Mat img(90, 70, CV_8UC3), fx(50, 60, CV_32FC1), fy(50, 60, CV_32FC1), m1, m2, want, mine;
        rng.fill(img, cv::RNG::UNIFORM, 0, 256);
        rng.fill(fx, cv::RNG::UNIFORM, -5.0, 75.0);
        rng.fill(fy, cv::RNG::UNIFORM, -5.0, 95.0);
        cv::convertMaps(fx, fy, m1, m2, CV_16SC2);
        for (auto b : borders) {
            cv::remap(img, want, m1, m2, cv::INTER_LINEAR, cv_border(b));
            styleid::remap_linear_fixed(img, mine, m1, m2, b);
            CHECK(cv::norm(want, mine, cv::NORM_INF) == 0, "remap border %d differs from cv::remap", int(b));
            ++cases;
        }
    }
    // the validity mask: warpAffine(ones, INTER_NEAREST, constant 0) > 0
    for (const auto &m : mats)
        for (bool inverse : {false, true}) {
            cv::Size src(83, 67), out(120, 90);
            cv::Mat ones(src, CV_8U, cv::Scalar(1)), want, mine;
            cv::warpAffine(ones, want, m, out, cv::INTER_NEAREST | (inverse ? cv::WARP_INVERSE_MAP : 0),
                           cv::BORDER_CONSTANT, cv::Scalar(0));
            styleid::warp_affine_nearest_inside(src, mine, m, out, inverse);
            const double differing = cv::countNonZero((want > 0) != (mine > 0));
            CHECK(differing <= (kExact ? 0 : out.area() / 100), "nearest mask: %g pixels differ", differing);
            ++cases;
        }
    // errors, not crashes
    bool threw = false;
    try {
        cv::Mat bad(4, 4, CV_16UC1), out;
        styleid::warp_affine_linear(bad, out, mats[0], cv::Size(4, 4), styleid::Border::Constant);
    } catch (const std::invalid_argument &) {
        threw = true;
    }
    CHECK(threw, "an unsupported type must throw std::invalid_argument");
    if (failures) return 1;
    std::printf("test_warp: %d warps match OpenCV %s (%s)\n", cases, CV_VERSION, kExact ? "bit for bit" : "within bounds");
    return 0;
}
