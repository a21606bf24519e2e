// blend.cpp - see blend.hpp; each step mirrors runtime/blend.py so the pasted pixels agree.
#include "blend.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <opencv2/imgproc.hpp>

#include "warp.hpp"

namespace styleid {

namespace {

constexpr int kMinStatPixels = 16;
constexpr int kStatsSide = 128;  // colour statistics read about this many rows and columns (blend.py _STATS_SIDE)

double min_singular_value(const cv::Matx23d &m) {
    double a = m(0, 0), b = m(0, 1), c = m(1, 0), d = m(1, 1);
    double t = a * a + b * b + c * c + d * d, det = a * d - b * c;
    double disc = std::sqrt(std::max(0.0, t * t - 4 * det * det));
    return std::sqrt(std::max(0.0, (t - disc) / 2.0));
}

}  // namespace

cv::Mat reinhard_lab(const cv::Mat &src, const cv::Mat &ref, const cv::Mat &mask) {
    ReinhardWork work;
    cv::Mat out;
    reinhard_lab(src, ref, mask, work, out);
    return out;
}

int stats_step(int rows, int cols) { return std::max(1, std::min(rows, cols) / kStatsSide); }

void reinhard_lab(const cv::Mat &src, const cv::Mat &ref, const cv::Mat &mask, ReinhardWork &work, cv::Mat &out,
                  int step) {
    step = std::max(step, 1);
    const cv::Size sample((src.cols + step - 1) / step, (src.rows + step - 1) / step);
    if (ref.size() != sample || mask.size() != sample)
        throw std::invalid_argument("reinhard_lab: ref and mask must be the source's statistics sample size");
    if (cv::countNonZero(mask) < kMinStatPixels) {
        src.copyTo(out);
        return;
    }
    cv::Mat &fs = work.fs.fit(src.size(), CV_32FC3), &fr = work.fr.fit(ref.size(), CV_32FC3);
    cv::Mat &lab_s = work.lab_s.fit(src.size(), CV_32FC3), &lab_r = work.lab_r.fit(ref.size(), CV_32FC3);
    cv::Mat &bgr = work.bgr.fit(src.size(), CV_32FC3);
    src.convertTo(fs, CV_32F, 1.0 / 255.0);
    ref.convertTo(fr, CV_32F, 1.0 / 255.0);
    cv::cvtColor(fs, lab_s, cv::COLOR_BGR2Lab);
    cv::cvtColor(fr, lab_r, cv::COLOR_BGR2Lab);
    const cv::Mat *stats_s = &lab_s;
    if (step > 1) {  // the source's pixels at (step * x, step * y), as runtime/blend.py reads lab_s[::k, ::k]
        cv::Mat &sampled = work.lab_s_sample.fit(sample, CV_32FC3);
        for (int y = 0; y < sample.height; ++y) {
            const cv::Vec3f *p = lab_s.ptr<cv::Vec3f>(y * step);
            cv::Vec3f *o = sampled.ptr<cv::Vec3f>(y);
            for (int x = 0; x < sample.width; ++x) o[x] = p[x * step];
        }
        stats_s = &sampled;
    }
    cv::Scalar mu_s, sd_s, mu_r, sd_r;
    cv::meanStdDev(*stats_s, mu_s, sd_s, mask);
    cv::meanStdDev(lab_r, mu_r, sd_r, mask);
    float gain[3], ms[3], mr[3];
    for (int c = 0; c < 3; ++c) {
        double g = sd_r[c] / std::max(sd_s[c], 1e-6);
        gain[c] = static_cast<float>(std::min(std::max(g, 0.25), 4.0));
        ms[c] = static_cast<float>(mu_s[c]);
        mr[c] = static_cast<float>(mu_r[c]);
    }
    for (int y = 0; y < lab_s.rows; ++y) {
        float *p = lab_s.ptr<float>(y);
        for (int x = 0; x < lab_s.cols; ++x)
            for (int c = 0; c < 3; ++c) p[3 * x + c] = (p[3 * x + c] - ms[c]) * gain[c] + mr[c];
    }
    cv::cvtColor(lab_s, bgr, cv::COLOR_Lab2BGR);
    out.create(src.size(), CV_8UC3);
    for (int y = 0; y < bgr.rows; ++y) {
        const float *p = bgr.ptr<float>(y);
        uint8_t *o = out.ptr<uint8_t>(y);
        for (int x = 0; x < 3 * bgr.cols; ++x) {
            float v = p[x] > 0.f ? (p[x] < 1.f ? p[x] : 1.f) : 0.f;
            o[x] = static_cast<uint8_t>(v * 255.0f + 0.5f);
        }
    }
}

const cv::Mat &Paster::default_mask(int h, int w) {
    if (h == mask_h_ && w == mask_w_) return mask_;
    int size = std::min(h, w);
    int e = static_cast<int>(std::nearbyint(config_.erode_frac * size));
    cv::Mat mask = cv::Mat::zeros(h, w, CV_32F);
    if (h - 2 * e > 0 && w - 2 * e > 0) mask(cv::Rect(e, e, w - 2 * e, h - 2 * e)).setTo(1.0f);
    double sigma = config_.feather_frac * size / 3.0;
    if (sigma > 0.3) cv::GaussianBlur(mask, mask, cv::Size(0, 0), sigma, sigma, cv::BORDER_CONSTANT);
    mask_ = mask;
    mask_h_ = h;
    mask_w_ = w;
    return mask_;
}

void Paster::paste(cv::Mat &frame, const cv::Mat &face_crop, const cv::Matx23d &m_in) {
    if (frame.type() != CV_8UC3 || face_crop.type() != CV_8UC3) throw std::invalid_argument("paste: BGR uint8 images only");
    cv::Matx23d m = m_in;
    if (std::abs(m(0, 0) * m(1, 1) - m(0, 1) * m(1, 0)) < 1e-12) throw std::invalid_argument("paste: singular crop matrix");
    cv::Mat crop = face_crop;
    cv::Mat alpha_crop = default_mask(crop.rows, crop.cols);
    // a crop much larger than its footprint is area-downsampled first (no aliasing)
    double ratio = std::sqrt(std::abs(m(0, 0) * m(1, 1) - m(0, 1) * m(1, 0)));
    if (ratio > 1.5) {
        int ch = crop.rows, cw = crop.cols;
        int nh = std::max(2, static_cast<int>(std::nearbyint(ch / ratio)));
        int nw = std::max(2, static_cast<int>(std::nearbyint(cw / ratio)));
        double kx = static_cast<double>(nw) / cw, ky = static_cast<double>(nh) / ch;
        cv::Matx23d ms(kx * m(0, 0), kx * m(0, 1), kx * m(0, 2) + 0.5 * kx - 0.5,
                       ky * m(1, 0), ky * m(1, 1), ky * m(1, 2) + 0.5 * ky - 0.5);
        m = ms;
        cv::Mat &small_crop = small_crop_.fit(nh, nw, CV_8UC3), &small_alpha = small_alpha_.fit(nh, nw, CV_32F);
        area_.resize(crop, small_crop, cv::Size(nw, nh));  // = cv::resize INTER_AREA (within 1 level), no heap
        area_.resize(alpha_crop, small_alpha, cv::Size(nw, nh));
        crop = small_crop;
        alpha_crop = small_alpha;
    }
    const int ch = crop.rows, cw = crop.cols, h = frame.rows, w = frame.cols;
    cv::Matx23d inv;
    {  // cv::invertAffineTransform's arithmetic
        double d = m(0, 0) * m(1, 1) - m(0, 1) * m(1, 0);
        d = d != 0 ? 1.0 / d : 0.0;
        double a11 = m(1, 1) * d, a22 = m(0, 0) * d, a12 = -m(0, 1) * d, a21 = -m(1, 0) * d;
        inv = cv::Matx23d(a11, a12, -a11 * m(0, 2) - a12 * m(1, 2), a21, a22, -a21 * m(0, 2) - a22 * m(1, 2));
    }
    double xs[4], ys[4];
    const double corners[4][2] = {{0, 0}, {double(cw), 0}, {double(cw), double(ch)}, {0, double(ch)}};
    for (int i = 0; i < 4; ++i) {
        xs[i] = inv(0, 0) * corners[i][0] + inv(0, 1) * corners[i][1] + inv(0, 2);
        ys[i] = inv(1, 0) * corners[i][0] + inv(1, 1) * corners[i][1] + inv(1, 2);
    }
    int pad = static_cast<int>(std::ceil(std::max(1.0, 1.0 / min_singular_value(m))));
    int x0 = std::max(static_cast<int>(std::floor(*std::min_element(xs, xs + 4))) - pad, 0);
    int y0 = std::max(static_cast<int>(std::floor(*std::min_element(ys, ys + 4))) - pad, 0);
    int x1 = std::min(static_cast<int>(std::ceil(*std::max_element(xs, xs + 4))) + pad + 1, w);
    int y1 = std::min(static_cast<int>(std::ceil(*std::max_element(ys, ys + 4))) + pad + 1, h);
    if (x1 <= x0 || y1 <= y0) return;  // outside the frame
    cv::Mat roi = frame(cv::Rect(x0, y0, x1 - x0, y1 - y0));
    cv::Matx23d m_roi = m;
    m_roi(0, 2) += m(0, 0) * x0 + m(0, 1) * y0;
    m_roi(1, 2) += m(1, 0) * x0 + m(1, 1) * y0;
    const cv::Mat *colour = &crop;
    // every scratch image is a view of a buffer kept paste to paste (scratch.hpp), and the warps are ours
    // (warp.hpp, cv::warpAffine's arithmetic): a steady stream of faces makes no heap allocation here
    if (config_.reinhard) {
        // the frame under the crop, sampled as the crop was made, only at the crop pixels the statistics read:
        // every k-th row and column (k = stats_step), as runtime/blend.py paste_back does
        const int k = stats_step(ch, cw), hs = (ch + k - 1) / k, ws = (cw + k - 1) / k;
        const cv::Matx23d m_stats = m_roi * (1.0 / k);
        cv::Mat &original = original_.fit(hs, ws, CV_8UC3);
        warp_affine_linear(roi, original, m_stats, cv::Size(ws, hs), Border::Replicate);
        // sample pixels whose nearest frame pixel lies inside the ROI (warpAffine of ones, INTER_NEAREST, > 0)
        cv::Mat &valid = valid_.fit(hs, ws, CV_8U), &alpha_ok = alpha_ok_.fit(hs, ws, CV_8U);
        warp_affine_nearest_inside(roi.size(), valid, m_stats, cv::Size(ws, hs));
        for (int y = 0; y < hs; ++y) {  // alpha > 0.5 at the sampled crop pixels: 0/255
            const float *a = alpha_crop.ptr<float>(y * k);
            uint8_t *o = alpha_ok.ptr<uint8_t>(y);
            for (int x = 0; x < ws; ++x) o[x] = a[x * k] > 0.5f ? 255 : 0;
        }
        cv::bitwise_and(alpha_ok, valid, valid);  // the statistics mask (nonzero = use)
        cv::Mat &colour_match = colour_.fit(ch, cw, CV_8UC3);
        reinhard_lab(crop, original, valid, reinhard_, colour_match, k);
        colour = &colour_match;
    }
    const cv::Size size(x1 - x0, y1 - y0);
    cv::Mat &warped = warped_.fit(size, CV_8UC3), &alpha = alpha_.fit(size, CV_32F), &beta = beta_.fit(size, CV_32F);
    cv::Mat &roi_copy = roi_copy_.fit(size, CV_8UC3), &blended = blended_.fit(size, CV_8UC3);
    warp_affine_linear(*colour, warped, m_roi, size, Border::Replicate, /*inverse_map=*/true);
    warp_affine_linear(alpha_crop, alpha, m_roi, size, Border::Constant, /*inverse_map=*/true);
    for (int y = 0; y < size.height; ++y) {  // clip alpha to [0, 1], beta = 1 - alpha (cv::max/min/subtract allocate)
        float *a = alpha.ptr<float>(y), *b = beta.ptr<float>(y);
        for (int x = 0; x < size.width; ++x) {
            a[x] = std::min(std::max(a[x], 0.f), 1.f);
            b[x] = 1.f - a[x];
        }
    }
    roi.copyTo(roi_copy);
    cv::blendLinear(warped, roi_copy, alpha, beta, blended);
    blended.copyTo(roi);
}

}  // namespace styleid
