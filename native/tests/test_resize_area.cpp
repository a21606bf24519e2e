// test_resize_area.cpp - AreaResizer (resize_area.hpp) against cv::resize(INTER_AREA): uint8 1- and 3-channel and
// float images, integer and fractional shrink factors, unequal factors per axis, 1-pixel outputs; within 1 grey
// level (uint8) / 1e-5 (float) everywhere, equal on at least 99 % of the uint8 pixels, and bit for bit
// at integer factors (cv::resize's fast path: the encoder's 512 -> 256 and 256 -> 32 crops). Then a reused resizer
// over changing sizes gives the same results as a fresh one.
#include <cstdio>

#include <opencv2/imgproc.hpp>

#include "check.h"
#include "resize_area.hpp"

int main() {
    cv::RNG rng(5);
    styleid::AreaResizer reused;
    int cases = 0;
    const cv::Size srcs[] = {cv::Size(256, 256), cv::Size(97, 61), cv::Size(512, 300)};
    for (int type : {CV_8UC3, CV_8UC1, CV_32FC1})
        for (cv::Size s : srcs) {
            cv::Mat img(s, type);
            if (type == CV_32FC1) rng.fill(img, cv::RNG::UNIFORM, 0.0, 1.0);
            else rng.fill(img, cv::RNG::UNIFORM, 0, 256);
            cv::GaussianBlur(img, img, cv::Size(0, 0), 0.7);  // image-like, not only noise
            for (double f : {1.0, 1.5, 2.0, 2.37, 3.0, 4.0, 5.5, 8.0}) {
                for (cv::Size out : {cv::Size(std::max(1, int(s.width / f)), std::max(1, int(s.height / f))),
                                     cv::Size(std::max(1, int(s.width / f)), std::max(1, int(s.height / (f + 0.7)))),
                                     cv::Size(1, 1)}) {
                    cv::Mat want, got, fresh;
                    cv::resize(img, want, out, 0, 0, cv::INTER_AREA);
                    reused.resize(img, got, out);
                    styleid::AreaResizer().resize(img, fresh, out);
                    const double diff = cv::norm(want, got, cv::NORM_INF);
                    CHECK(cv::norm(got, fresh, cv::NORM_INF) == 0, "reused resizer differs from a fresh one");
                    if (type == CV_32FC1) {
                        CHECK(diff <= 1e-5, "float %dx%d -> %dx%d: max diff %g", s.width, s.height, out.width, out.height, diff);
                    } else {
                        cv::Mat ne = want != got;
                        const double share = double(cv::countNonZero(ne.reshape(1))) / double(want.total() * want.channels());
                        CHECK(diff <= 1 && share <= 0.01, "uint8 %dx%d -> %dx%d: max diff %g, %.2f%% differ", s.width,
                              s.height, out.width, out.height, diff, 100 * share);
                        const bool integer = s.width % out.width == 0 && s.width / out.width >= 2 &&
                                             s.height == s.width / out.width * out.height;
                        CHECK(!integer || diff == 0, "integer factor %dx%d -> %dx%d must be exact (diff %g)", s.width,
                              s.height, out.width, out.height, diff);
                    }
                    ++cases;
                }
            }
        }
    bool threw = false;
    try {
        cv::Mat small(4, 4, CV_8UC3, cv::Scalar::all(9)), out;
        reused.resize(small, out, cv::Size(8, 8));
    } catch (const std::invalid_argument &) {
        threw = true;
    }
    CHECK(threw, "enlarging must throw std::invalid_argument");
    if (failures) return 1;
    std::printf("test_resize_area: %d resizes agree with cv::resize(INTER_AREA)\n", cases);
    return 0;
}
