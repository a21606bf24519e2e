// detect.cpp - YuNet 2023mar decoding and the multi-pass cover of styleid_edge/runtime/detect.py.
#include "detect.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <opencv2/imgproc.hpp>

#include "error.hpp"

namespace styleid {

namespace {

constexpr int kStrides[3] = {8, 16, 32};
constexpr float kYuNetNms = 0.3f;  // cv::FaceDetectorYN's default, as the Python YuNet class

// Map detections through a 2x3 affine; boxes are treated as the ellipse they bound.
void map_affine(std::vector<Detection> &dets, const cv::Matx23d &m) {
    for (auto &d : dets) {
        for (int k = 0; k < 5; ++k) {
            double x = d.landmarks[2 * k], y = d.landmarks[2 * k + 1];
            d.landmarks[2 * k] = static_cast<float>(m(0, 0) * x + m(0, 1) * y + m(0, 2));
            d.landmarks[2 * k + 1] = static_cast<float>(m(1, 0) * x + m(1, 1) * y + m(1, 2));
        }
        double bx1 = d.box[0], by1 = d.box[1], bx2 = d.box[2], by2 = d.box[3];
        double cx0 = (bx1 + bx2) / 2, cy0 = (by1 + by2) / 2;
        double cx = m(0, 0) * cx0 + m(0, 1) * cy0 + m(0, 2);
        double cy = m(1, 0) * cx0 + m(1, 1) * cy0 + m(1, 2);
        double a = (bx2 - bx1) / 2, b = (by2 - by1) / 2;
        double hw = std::hypot(m(0, 0) * a, m(0, 1) * b);
        double hh = std::hypot(m(1, 0) * a, m(1, 1) * b);
        d.box = {static_cast<float>(cx - hw), static_cast<float>(cy - hh), static_cast<float>(cx + hw),
                 static_cast<float>(cy + hh)};
    }
}

// cv::invertAffineTransform's arithmetic, without its InputArray/OutputArray plumbing
cv::Matx23d invert(const cv::Matx23d &m) {
    double d = m(0, 0) * m(1, 1) - m(0, 1) * m(1, 0);
    d = d != 0 ? 1.0 / d : 0.0;
    double a11 = m(1, 1) * d, a22 = m(0, 0) * d, a12 = -m(0, 1) * d, a21 = -m(1, 0) * d;
    double b1 = -a11 * m(0, 2) - a12 * m(1, 2), b2 = -a21 * m(0, 2) - a22 * m(1, 2);
    return cv::Matx23d(a11, a12, b1, a21, a22, b2);
}

// cv::getRotationMatrix2D (which returns a heap-allocated cv::Mat) as a Matx
cv::Matx23d rotation_matrix(cv::Point2f centre, double angle_deg) {
    double a = angle_deg * CV_PI / 180.0;
    double alpha = std::cos(a), beta = std::sin(a);
    return cv::Matx23d(alpha, beta, (1 - alpha) * centre.x - beta * centre.y, -beta, alpha,
                       beta * centre.x + (1 - alpha) * centre.y);
}

// Python's round(): half to even (the default floating-point rounding mode).
int round_even(double v) { return static_cast<int>(std::nearbyint(v)); }

void spans(int n, int tile, int overlap, std::vector<std::pair<int, int>> &out) {
    out.clear();
    if (n <= tile) {
        out.emplace_back(0, n);
        return;
    }
    int k = static_cast<int>(std::ceil(static_cast<double>(n - overlap) / (tile - overlap)));
    int size = static_cast<int>(std::ceil(static_cast<double>(n + (k - 1) * overlap) / k));
    double step = static_cast<double>(n - size) / (k - 1);
    for (int i = 0; i < k; ++i) out.emplace_back(round_even(i * step), round_even(i * step) + size);
}

}  // namespace

std::vector<size_t> nms(const std::vector<Detection> &dets, float iou) {
    std::vector<size_t> keep;
    NmsScratch scratch;
    nms(dets, iou, keep, scratch);
    return keep;
}

void nms(const std::vector<Detection> &dets, float iou, std::vector<size_t> &keep, NmsScratch &scratch) {
    std::vector<size_t> &order = scratch.order;
    order.resize(dets.size());
    std::iota(order.begin(), order.end(), 0);
    auto better = [&](size_t a, size_t b) {
        if (dets[a].weak != dets[b].weak) return !dets[a].weak;  // a weak face never suppresses a strong one
        return dets[a].score > dets[b].score;
    };
    if (order.size() <= 256) {  // stable insertion sort: std::stable_sort takes a heap buffer every call
        for (size_t i = 1; i < order.size(); ++i)
            for (size_t j = i; j > 0 && better(order[j], order[j - 1]); --j) std::swap(order[j], order[j - 1]);
    } else {
        std::stable_sort(order.begin(), order.end(), better);
    }
    auto area = [](const Detection &d) {
        return std::max(0.0, double(d.box[2]) - d.box[0]) * std::max(0.0, double(d.box[3]) - d.box[1]);
    };
    keep.clear();
    std::vector<char> &removed = scratch.removed;
    removed.assign(dets.size(), 0);
    for (size_t oi = 0; oi < order.size(); ++oi) {
        size_t i = order[oi];
        if (removed[i]) continue;
        keep.push_back(i);
        for (size_t oj = oi + 1; oj < order.size(); ++oj) {
            size_t j = order[oj];
            if (removed[j]) continue;
            const auto &a = dets[i].box, &b = dets[j].box;
            double xx1 = std::max<double>(a[0], b[0]), yy1 = std::max<double>(a[1], b[1]);
            double xx2 = std::min<double>(a[2], b[2]), yy2 = std::min<double>(a[3], b[3]);
            double inter = std::max(0.0, xx2 - xx1) * std::max(0.0, yy2 - yy1);
            double ov = inter / std::max(area(dets[i]) + area(dets[j]) - inter, 1e-9);
            if (ov > iou) removed[j] = 1;
        }
    }
}

Detector::Detector(ov::Core &core, const std::string &model_path, const std::string &device, int threads,
                   DetectorOptions options)
    : model_(core, model_path, "detector (YuNet fp32)", {"input"},
             {"cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32", "bbox_8", "bbox_16", "bbox_32", "kps_8",
              "kps_16", "kps_32"},
             device, threads, /*static_shapes=*/true),
      options_(options) {
    if (!(options_.threshold > 0.f && options_.threshold <= 1.f))
        throw Error(STYLEID_EDGE_ERR_ARGUMENT, "detector_threshold must be in (0, 1]");
    if (!(options_.weak_threshold >= 0.f && options_.weak_threshold <= 1.f))
        throw Error(STYLEID_EDGE_ERR_ARGUMENT, "weak_threshold must be in [0, 1] (0: off)");
}

void Detector::single_pass(const cv::Mat &img) {
    const int h = img.rows, w = img.cols;
    const int ph = (h + 31) / 32 * 32, pw = (w + 31) / 32 * 32;
    // planar float input, zero-padded to a multiple of 32 on the right and bottom (cv::copyMakeBorder would allocate)
    float *blob = model_.input(0, Dims{1, 3, static_cast<size_t>(ph), static_cast<size_t>(pw)});
    for (int y = 0; y < ph; ++y) {
        const uint8_t *row = y < h ? img.ptr<uint8_t>(y) : nullptr;
        for (int c = 0; c < 3; ++c) {
            float *out = blob + (static_cast<size_t>(c) * ph + y) * pw;
            const int inside = row ? w : 0;
            for (int x = 0; x < inside; ++x) out[x] = row[3 * x + c];
            for (int x = inside; x < pw; ++x) out[x] = 0.f;
        }
    }
    model_.infer();
    std::vector<Detection> &found = found_;
    found.clear();
    const float floor = options_.weak_threshold > 0.f ? std::min(options_.weak_threshold, options_.threshold)
                                                      : options_.threshold;
    for (int si = 0; si < 3; ++si) {
        const int s = kStrides[si];
        const int cols = pw / s;
        const TensorView cls = model_.output(si);
        const float *pc = cls.data, *po = model_.output(3 + si).data, *pb = model_.output(6 + si).data,
                    *pk = model_.output(9 + si).data;
        const size_t n = cls.size();
        for (size_t i = 0; i < n; ++i) {
            float c = std::min(std::max(pc[i], 0.f), 1.f), o = std::min(std::max(po[i], 0.f), 1.f);
            float score = std::sqrt(c * o);
            if (!(score >= floor)) continue;
            float gx = static_cast<float>(i % cols), gy = static_cast<float>(i / cols);
            const float *b = pb + 4 * i;
            float cx = (gx + b[0]) * s, cy = (gy + b[1]) * s;
            float bw = std::exp(b[2]) * s, bh = std::exp(b[3]) * s;
            Detection d;
            d.box = {cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2};
            d.score = score;
            d.weak = score < options_.threshold;
            for (int k = 0; k < 5; ++k) {
                d.landmarks[2 * k] = (pk[10 * i + 2 * k] + gx) * s;
                d.landmarks[2 * k + 1] = (pk[10 * i + 2 * k + 1] + gy) * s;
            }
            found.push_back(d);
        }
    }
    nms(found, kYuNetNms, keep_, nms_scratch_);
    pass_.clear();
    for (size_t i : keep_) pass_.push_back(found[i]);
}

const std::vector<Detection> &Detector::detect(const cv::Mat &frame) {
    if (frame.empty() || frame.type() != CV_8UC3)
        throw Error(STYLEID_EDGE_ERR_ARGUMENT, "detect: expected a non-empty 8-bit BGR image");
    const int h = frame.rows, w = frame.cols;
    const auto &o = options_;
    double scale = std::min(1.0, static_cast<double>(o.working_size) / std::max(h, w));
    cv::Mat work = frame;  // a header: no allocation
    if (scale < 1.0) {
        // = cv::resize INTER_AREA within 1 grey level, without its per-call heap tables
        const cv::Size size(std::max(1, round_even(w * scale)), std::max(1, round_even(h * scale)));
        area_.resize(frame, work_.fit(size, CV_8UC3), size);
        work = work_.mat();
    }
    cv::Matx23d back(static_cast<double>(w) / work.cols, 0, 0, 0, static_cast<double>(h) / work.rows, 0);
    std::vector<Detection> &all = all_;
    single_pass(work);
    map_affine(pass_, back);
    all.assign(pass_.begin(), pass_.end());
    if (o.rotations) {
        int pass = 0;
        for (double angle : {-30.0, 30.0}) {
            cv::Matx23d rot = rotation_matrix(cv::Point2f(work.cols / 2.0f, work.rows / 2.0f), angle);
            double ca = std::abs(rot(0, 0)), sa = std::abs(rot(0, 1));
            int nw = static_cast<int>(std::ceil(work.cols * ca + work.rows * sa));
            int nh = static_cast<int>(std::ceil(work.cols * sa + work.rows * ca));
            rot(0, 2) += nw / 2.0 - work.cols / 2.0;
            rot(1, 2) += nh / 2.0 - work.rows / 2.0;
            rotate_[pass++].apply(work, rotated_, rot, cv::Size(nw, nh));  // = cv::warpAffine, maps built once
            single_pass(rotated_);
            map_affine(pass_, invert(rot));
            map_affine(pass_, back);
            all.insert(all.end(), pass_.begin(), pass_.end());
        }
    }
    if (o.tile_size > 0 && scale < 1.0) {
        const float margin = 2.0f;
        spans(h, o.tile_size, o.tile_overlap, yspans_);
        spans(w, o.tile_size, o.tile_overlap, xspans_);
        for (const auto &ys : yspans_) {
            for (const auto &xs : xspans_) {
                int x0 = xs.first, x1 = xs.second, y0 = ys.first, y1 = ys.second;
                single_pass(frame(cv::Rect(x0, y0, x1 - x0, y1 - y0)));
                for (auto &d : pass_) {
                    if (x0 > 0 && !(d.box[0] > margin)) continue;
                    if (y0 > 0 && !(d.box[1] > margin)) continue;
                    if (x1 < w && !(d.box[2] < (x1 - x0) - margin)) continue;
                    if (y1 < h && !(d.box[3] < (y1 - y0) - margin)) continue;
                    for (int k = 0; k < 4; ++k) d.box[k] += static_cast<float>(k % 2 == 0 ? x0 : y0);
                    for (int k = 0; k < 5; ++k) {
                        d.landmarks[2 * k] += static_cast<float>(x0);
                        d.landmarks[2 * k + 1] += static_cast<float>(y0);
                    }
                    all.push_back(d);
                }
            }
        }
    }
    nms(all, o.merge_iou, keep_, nms_scratch_);  // best score first
    out_.clear();
    for (size_t i : keep_) out_.push_back(all[i]);
    return out_;
}

}  // namespace styleid
