// align.cpp - the NVlabs FFHQ crop rule as one bilinear warp (pixel-centre convention), see runtime/align.py.
#include "align.hpp"

#include <cmath>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

#include "warp.hpp"

namespace styleid {

std::array<cv::Point2d, 4> ffhq_quad(const Landmarks &lm) {
    for (double v : lm)
        if (!std::isfinite(v)) throw std::invalid_argument("landmarks contain NaN or inf");
    cv::Point2d eye_l(lm[0], lm[1]), eye_r(lm[2], lm[3]), mouth_l(lm[6], lm[7]), mouth_r(lm[8], lm[9]);
    cv::Point2d eye_avg = (eye_l + eye_r) * 0.5;
    cv::Point2d eye_to_eye = eye_r - eye_l;
    cv::Point2d mouth_avg = (mouth_l + mouth_r) * 0.5;
    cv::Point2d eye_to_mouth = mouth_avg - eye_avg;
    // x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1]
    cv::Point2d x(eye_to_eye.x + eye_to_mouth.y, eye_to_eye.y - eye_to_mouth.x);
    double norm = std::hypot(x.x, x.y);
    if (norm < 1e-9) throw std::invalid_argument("degenerate landmarks (eyes and mouth coincide)");
    x = x / norm;
    x = x * std::max(std::hypot(eye_to_eye.x, eye_to_eye.y) * 2.0, std::hypot(eye_to_mouth.x, eye_to_mouth.y) * 1.8);
    cv::Point2d y(-x.y, x.x);  // flipud(x) * [-1, 1]
    cv::Point2d c = eye_avg + eye_to_mouth * 0.1;
    return {c - x - y, c - x + y, c + x + y, c + x - y};
}

namespace {

// The affine taking 3 points onto 3 points (float64 solve, as np.linalg.solve in align.py).
cv::Matx23d affine_from_3_points(const cv::Point2d src[3], const cv::Point2d dst[3]) {
    cv::Matx33d a(src[0].x, src[0].y, 1, src[1].x, src[1].y, 1, src[2].x, src[2].y, 1);
    if (std::abs(cv::determinant(a)) < 1e-12) throw std::invalid_argument("the 3 source points are collinear");
    cv::Matx32d d(dst[0].x, dst[0].y, dst[1].x, dst[1].y, dst[2].x, dst[2].y);
    cv::Matx32d sol;
    cv::solve(a, d, sol, cv::DECOMP_LU);
    return cv::Matx23d(sol(0, 0), sol(1, 0), sol(2, 0), sol(0, 1), sol(1, 1), sol(2, 1));
}

}  // namespace

cv::Matx23d ffhq_crop(const cv::Mat &frame, const Landmarks &lm, int size, cv::Mat &crop) {
    ScratchMat small;
    AreaResizer area;
    return ffhq_crop(frame, lm, size, crop, small, area);
}

cv::Matx23d ffhq_crop(const cv::Mat &frame, const Landmarks &lm, int size, cv::Mat &crop, ScratchMat &small_buffer,
                      AreaResizer &area) {
    auto quad = ffhq_quad(lm);
    const cv::Point2d dst[3] = {{-0.5, -0.5}, {-0.5, size - 0.5}, {size - 0.5, size - 0.5}};
    cv::Matx23d m = affine_from_3_points(quad.data(), dst);
    double qsize = std::hypot(quad[3].x - quad[0].x, quad[3].y - quad[0].y);
    int shrink = static_cast<int>(std::floor(qsize / size * 0.5));
    if (shrink > 1) {
        const int h = frame.rows, w = frame.cols;
        int nw = std::max(1, static_cast<int>(std::nearbyint(static_cast<double>(w) / shrink)));
        int nh = std::max(1, static_cast<int>(std::nearbyint(static_cast<double>(h) / shrink)));
        cv::Mat &small = small_buffer.fit(nh, nw, frame.type());
        area.resize(frame, small, cv::Size(nw, nh));  // = cv::resize INTER_AREA (within 1 level), no heap
        double sx = static_cast<double>(nw) / w, sy = static_cast<double>(nh) / h;
        // m_src = m o inverse(pre), pre: frame pixel centre -> shrunk pixel centre
        cv::Matx23d m_src(m(0, 0) / sx, m(0, 1) / sy, 0, m(1, 0) / sx, m(1, 1) / sy, 0);
        double tx = -(0.5 * sx - 0.5) / sx, ty = -(0.5 * sy - 0.5) / sy;
        m_src(0, 2) = m(0, 0) * tx + m(0, 1) * ty + m(0, 2);
        m_src(1, 2) = m(1, 0) * tx + m(1, 1) * ty + m(1, 2);
        warp_affine_linear(small, crop, m_src, cv::Size(size, size), Border::Reflect101);
    } else {
        warp_affine_linear(frame, crop, m, cv::Size(size, size), Border::Reflect101);  // = cv::warpAffine, no heap
    }
    return m;
}

double yaw_proxy(const Landmarks &lm) {
    double ex = lm[2] - lm[0], ey = lm[3] - lm[1];
    double eye_dist = std::hypot(ex, ey);
    if (eye_dist < 1e-6) return 1.0;
    double roll = std::atan2(ey, ex);
    double c = std::cos(-roll), s = std::sin(-roll);
    double mx = 0, my = 0;
    for (int k = 0; k < 5; ++k) { mx += lm[2 * k]; my += lm[2 * k + 1]; }
    mx /= 5; my /= 5;
    double px[5];
    for (int k = 0; k < 5; ++k) px[k] = c * (lm[2 * k] - mx) - s * (lm[2 * k + 1] - my);
    double mid = (px[0] + px[1] + px[3] + px[4]) / 4.0;
    double yaw = (px[2] - mid) / (eye_dist / 2.0);
    return std::min(1.0, std::max(-1.0, yaw));
}

}  // namespace styleid
