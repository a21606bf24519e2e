// fixed_warp.cpp - see fixed_warp.hpp. The map arithmetic follows OpenCV's warpAffine (imgwarp.cpp): inverse
// matrix, coordinates in 1/1024 px fixed point (AB_BITS 10) rounded to 1/32 px (INTER_BITS 5).
#include "fixed_warp.hpp"

#include "warp.hpp"

#include <vector>

#include <opencv2/imgproc.hpp>

namespace styleid {

namespace {
constexpr int kInterBits = cv::INTER_BITS;             // 5
constexpr int kInterTab = cv::INTER_TAB_SIZE;          // 32
constexpr int kAbBits = kInterBits > 10 ? kInterBits : 10;
constexpr int kAbScale = 1 << kAbBits;
constexpr int kRoundDelta = kAbScale / kInterTab / 2;  // bilinear
}  // namespace

void FixedWarp::build(const cv::Matx23d &m, cv::Size size) {
    // the inverse map dst -> src, as warpAffine computes it
    double M[6] = {m(0, 0), m(0, 1), m(0, 2), m(1, 0), m(1, 1), m(1, 2)};
    double D = M[0] * M[4] - M[1] * M[3];
    D = D != 0 ? 1. / D : 0;
    double a11 = M[4] * D, a22 = M[0] * D;
    M[0] = a11;
    M[1] *= -D;
    M[3] *= -D;
    M[4] = a22;
    double b1 = -M[0] * M[2] - M[1] * M[5];
    double b2 = -M[3] * M[2] - M[4] * M[5];
    M[2] = b1;
    M[5] = b2;

    std::vector<int> adelta(size.width), bdelta(size.width);
    for (int x = 0; x < size.width; ++x) {
        adelta[x] = cv::saturate_cast<int>(M[0] * x * kAbScale);
        bdelta[x] = cv::saturate_cast<int>(M[3] * x * kAbScale);
    }
    map1_.create(size, CV_16SC2);
    map2_.create(size, CV_16UC1);
    for (int y = 0; y < size.height; ++y) {
        const int X0 = cv::saturate_cast<int>((M[1] * y + M[2]) * kAbScale) + kRoundDelta;
        const int Y0 = cv::saturate_cast<int>((M[4] * y + M[5]) * kAbScale) + kRoundDelta;
        short *xy = map1_.ptr<short>(y);
        ushort *a = map2_.ptr<ushort>(y);
        for (int x = 0; x < size.width; ++x) {
            const int X = (X0 + adelta[x]) >> (kAbBits - kInterBits);
            const int Y = (Y0 + bdelta[x]) >> (kAbBits - kInterBits);
            xy[2 * x] = cv::saturate_cast<short>(X >> kInterBits);
            xy[2 * x + 1] = cv::saturate_cast<short>(Y >> kInterBits);
            a[x] = static_cast<ushort>((Y & (kInterTab - 1)) * kInterTab + (X & (kInterTab - 1)));
        }
    }
    m_ = m;
    size_ = size;
    ready_ = true;
}

void FixedWarp::apply(const cv::Mat &src, cv::Mat &dst, const cv::Matx23d &m, cv::Size size) {
    if (!ready_ || size != size_ || cv::norm(m - m_, cv::NORM_INF) != 0) build(m, size);
    remap_linear_fixed(src, dst, map1_, map2_, Border::Constant);  // cv::remap allocates per call
}

}  // namespace styleid
