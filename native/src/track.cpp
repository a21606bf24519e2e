// track.cpp - see track.hpp; mirrors runtime/track.py step for step so tracks, ids and seeds agree.
#include "track.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "error.hpp"
#include "seeds.hpp"

namespace styleid {

namespace {

constexpr double kForbidden = 1e6;
constexpr double kPi = 3.14159265358979323846;

double smoothing_factor(double cutoff, double dt) {
    double tau = 1.0 / (2.0 * kPi * cutoff);
    return 1.0 / (1.0 + tau / dt);
}

double box_size(const Box &b) { return std::max({b[2] - b[0], b[3] - b[1], 1.0}); }
std::array<double, 2> centre(const Box &b) { return {(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0}; }

double iou(const Box &a, const Box &b) {
    double ix = std::max(0.0, std::min(a[2], b[2]) - std::max(a[0], b[0]));
    double iy = std::max(0.0, std::min(a[3], b[3]) - std::max(a[1], b[1]));
    double inter = ix * iy;
    double area_a = std::max(0.0, a[2] - a[0]) * std::max(0.0, a[3] - a[1]);
    double area_b = std::max(0.0, b[2] - b[0]) * std::max(0.0, b[3] - b[1]);
    double uni = area_a + area_b - inter;
    return uni > 0 ? inter / std::max(uni, 1e-12) : 0.0;
}

}  // namespace

std::vector<std::pair<int, int>> linear_assignment(const std::vector<double> &cost, int rows, int cols) {
    std::vector<std::pair<int, int>> pairs;
    AssignmentScratch scratch;
    linear_assignment(cost, rows, cols, pairs, scratch);
    return pairs;
}

void linear_assignment(const std::vector<double> &cost_in, int rows, int cols, std::vector<std::pair<int, int>> &pairs,
                       AssignmentScratch &scratch) {
    pairs.clear();
    if (rows == 0 || cols == 0) return;
    bool transposed = rows > cols;
    int n = transposed ? cols : rows, m = transposed ? rows : cols;
    auto c = [&](int i, int j) { return transposed ? cost_in[j * cols + i] : cost_in[i * cols + j]; };
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<double> &u = scratch.u, &v = scratch.v, &min_slack = scratch.min_slack;
    std::vector<int> &owner = scratch.owner, &way = scratch.way;
    std::vector<char> &used = scratch.used;
    u.assign(n + 1, 0.0);
    v.assign(m + 1, 0.0);
    min_slack.assign(m + 1, 0.0);
    owner.assign(m + 1, 0);
    way.assign(m + 1, 0);
    used.assign(m + 1, 0);
    for (int i = 1; i <= n; ++i) {
        owner[0] = i;
        int j0 = 0;
        std::fill(min_slack.begin(), min_slack.end(), inf);
        std::fill(used.begin(), used.end(), 0);
        while (true) {
            used[j0] = 1;
            int i0 = owner[j0];
            double delta = inf;
            int j1 = 0;
            for (int j = 1; j <= m; ++j) {
                if (used[j]) continue;
                double slack = c(i0 - 1, j - 1) - u[i0] - v[j];
                if (slack < min_slack[j]) { min_slack[j] = slack; way[j] = j0; }
            }
            for (int j = 1; j <= m; ++j)  // first minimum, as np.argmin
                if (!used[j] && min_slack[j] < delta) { delta = min_slack[j]; j1 = j; }
            if (j1 == 0) { // all remaining slacks infinite: take the first free column (argmin of all-inf)
                for (int j = 1; j <= m; ++j) if (!used[j]) { j1 = j; break; }
            }
            for (int j = 0; j <= m; ++j) {
                if (used[j]) { u[owner[j]] += delta; v[j] -= delta; }
                else min_slack[j] -= delta;
            }
            j0 = j1;
            if (owner[j0] == 0) break;
        }
        while (j0) {
            int j1 = way[j0];
            owner[j0] = owner[j1];
            j0 = j1;
        }
    }
    for (int j = 1; j <= m; ++j)
        if (owner[j] != 0) {
            if (transposed) pairs.emplace_back(j - 1, owner[j] - 1);
            else pairs.emplace_back(owner[j] - 1, j - 1);
        }
    std::sort(pairs.begin(), pairs.end());
}

Points OneEuro::operator()(const Points &x, double dt, double speed_scale) {
    if (!started_) {
        x_ = x;
        dx_.fill(0.0);
        started_ = true;
        return x;
    }
    dt = std::max(dt, 1e-6);
    double a_d = smoothing_factor(d_cutoff_, dt);
    for (size_t i = 0; i < x.size(); ++i) {
        double speed = (x[i] - x_[i]) / dt;
        dx_[i] = dx_[i] + a_d * (speed - dx_[i]);
        double cutoff = min_cutoff_ + beta_ * std::abs(dx_[i]) / std::max(speed_scale, 1e-9);
        double a = smoothing_factor(cutoff, dt);
        x_[i] = x_[i] + a * (x[i] - x_[i]);
    }
    return x_;
}

Box Tracker::predicted_box(const State &s, int64_t frame, double grow) const {
    double gap = static_cast<double>(frame - s.last_frame);
    auto c = centre(s.box);
    double cx = c[0] + s.velocity[0] * gap, cy = c[1] + s.velocity[1] * gap;
    double hw = (s.box[2] - s.box[0]) / 2.0 * (1.0 + grow * gap), hh = (s.box[3] - s.box[1]) / 2.0 * (1.0 + grow * gap);
    return {cx - hw, cy - hh, cx + hw, cy + hh};
}

std::optional<Points> Tracker::predicted_landmarks(const State &s, int64_t frame) const {
    if (!s.landmarks) return std::nullopt;
    double gap = static_cast<double>(frame - s.last_frame);
    Points p = *s.landmarks;
    for (int k = 0; k < 5; ++k) {
        p[2 * k] += s.velocity[0] * gap;
        p[2 * k + 1] += s.velocity[1] * gap;
    }
    return p;
}

std::optional<Points> Tracker::smooth(State &s, const std::optional<Points> &lm, double dt) {
    if (!lm) {
        if (s.filter) s.filter->reset();
        return std::nullopt;
    }
    if (!s.filter) return lm;
    Points sm = (*s.filter)(*lm, dt, box_size(s.box));
    double eye_dist = std::hypot((*lm)[2] - (*lm)[0], (*lm)[3] - (*lm)[1]);
    double lag = 0;
    for (int i = 0; i < 10; ++i) lag = std::max(lag, std::abs(sm[i] - (*lm)[i]));
    if (lag > config_.max_landmark_lag * std::max(eye_dist, 1.0)) {
        s.filter->reset();
        (*s.filter)(*lm, dt, box_size(s.box));
        return lm;
    }
    return sm;
}

Track Tracker::snapshot(const State &s, int64_t frame, bool held) const {
    Track t;
    t.track_id = s.id;
    t.score = s.score;
    t.held = held;
    t.seed = s.seed;
    t.weak = !held && s.weak;
    if (held) {
        t.box = predicted_box(s, frame, config_.hold_grow);
        t.landmarks = predicted_landmarks(s, frame);
    } else {
        t.box = s.box;
        t.landmarks = s.landmarks;
    }
    return t;
}

void Tracker::iou_pairs(const std::vector<Box> &boxes, const std::vector<Det> &dets,
                        std::vector<std::pair<int, int>> &out) {
    out.clear();
    const int rows = static_cast<int>(boxes.size()), cols = static_cast<int>(dets.size());
    cost_.resize(static_cast<size_t>(rows) * cols);
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) {
            double v = iou(boxes[i], dets[j].box);
            cost_[i * cols + j] = v >= config_.iou_match ? 1.0 - v : kForbidden;
        }
    linear_assignment(cost_, rows, cols, pairs_, assign_);
    for (auto &p : pairs_)
        if (cost_[p.first * cols + p.second] < kForbidden) out.push_back(p);
}

const std::vector<Track> &Tracker::update(const std::vector<Detection> &detections, int64_t frame_index) {
    const auto &cfg = config_;
    if (last_frame_ && frame_index <= *last_frame_)
        throw Error(STYLEID_EDGE_ERR_ARGUMENT, "frame_index must increase (reset the handle for a new stream)");
    last_frame_ = frame_index;
    std::vector<Det> &dets = dets_, &weak = weak_;
    dets.clear();
    weak.clear();
    for (const auto &d : detections) {
        bool finite = true;
        for (float v : d.box) finite = finite && std::isfinite(v);
        if (!finite) continue;
        Det det;
        det.box = {std::min(d.box[0], d.box[2]), std::min(d.box[1], d.box[3]), std::max(d.box[0], d.box[2]),
                   std::max(d.box[1], d.box[3])};
        det.score = d.score;
        bool lm_ok = true;
        Points p{};
        for (int i = 0; i < 10; ++i) { p[i] = d.landmarks[i]; lm_ok = lm_ok && std::isfinite(p[i]); }
        if (lm_ok) det.landmarks = p;
        (d.weak ? weak : dets).push_back(det);
    }
    // matching: IoU first (Hungarian on 1 - IoU), then landmark distance for the leftovers
    const int n_t = static_cast<int>(tracks_.size()), n_d = static_cast<int>(dets.size());
    std::vector<std::pair<int, int>> &matches = matches_;
    std::vector<int> &free_t = free_t_, &free_d = free_d_;
    matches.clear();
    free_t.clear();
    free_d.clear();
    if (n_t == 0 || n_d == 0) {
        for (int i = 0; i < n_t; ++i) free_t.push_back(i);
        for (int j = 0; j < n_d; ++j) free_d.push_back(j);
    } else {
        std::vector<Box> &pred = pred_;
        pred.resize(n_t);
        for (int i = 0; i < n_t; ++i) pred[i] = predicted_box(tracks_[i], frame_index, 0.0);
        iou_pairs(pred, dets, matches);
        taken_t_.assign(n_t, 0);
        taken_d_.assign(n_d, 0);
        for (auto &p : matches) { taken_t_[p.first] = 1; taken_d_[p.second] = 1; }
        for (int i = 0; i < n_t; ++i) if (!taken_t_[i]) free_t.push_back(i);
        for (int j = 0; j < n_d; ++j) if (!taken_d_[j]) free_d.push_back(j);
        if (cfg.landmark_match > 0 && !free_t.empty() && !free_d.empty()) {
            const int a_n = static_cast<int>(free_t.size()), b_n = static_cast<int>(free_d.size());
            std::vector<double> &cost2 = cost2_;
            cost2.assign(static_cast<size_t>(a_n) * b_n, kForbidden);
            for (int a = 0; a < a_n; ++a) {
                const State &st = tracks_[free_t[a]];
                double size = box_size(pred[free_t[a]]);
                auto p_lm = predicted_landmarks(st, frame_index);
                for (int b = 0; b < b_n; ++b) {
                    const Det &d = dets[free_d[b]];
                    double ratio = box_size(d.box) / size;
                    if (!(ratio >= 0.5 && ratio <= 2.0)) continue;
                    double dist = 0;
                    if (p_lm && d.landmarks) {
                        for (int k = 0; k < 5; ++k)
                            dist += std::hypot((*p_lm)[2 * k] - (*d.landmarks)[2 * k],
                                               (*p_lm)[2 * k + 1] - (*d.landmarks)[2 * k + 1]);
                        dist /= 5.0;
                    } else {
                        auto c1 = centre(pred[free_t[a]]), c2 = centre(d.box);
                        dist = std::hypot(c1[0] - c2[0], c1[1] - c2[1]);
                    }
                    // the pixel floor lets small fast faces (a camera pan) keep their track, as track.py does
                    if (dist <= cfg.landmark_match * size || dist <= cfg.min_motion_px)
                        cost2[a * b_n + b] = dist / size;
                }
            }
            std::vector<std::pair<int, int>> &extra = extra_;
            extra.clear();
            linear_assignment(cost2, a_n, b_n, pairs_, assign_);
            for (auto &p : pairs_)
                if (cost2[p.first * b_n + p.second] < kForbidden) extra.emplace_back(free_t[p.first], free_d[p.second]);
            taken_t_.assign(n_t, 0);
            taken_d_.assign(n_d, 0);
            for (auto &p : extra) { taken_t_[p.first] = 1; taken_d_[p.second] = 1; matches.push_back(p); }
            ft_.clear();
            fd_.clear();
            for (int i : free_t) if (!taken_t_[i]) ft_.push_back(i);
            for (int j : free_d) if (!taken_d_[j]) fd_.push_back(j);
            free_t.swap(ft_);
            free_d.swap(fd_);
        }
    }
    // second stage: tracks still unmatched x weak detections, Hungarian on 1 - IoU (a weak face never starts a track)
    const int n_strong = n_d;
    if (!weak.empty() && !free_t.empty()) {
        pred_.clear();
        for (int ti : free_t) pred_.push_back(predicted_box(tracks_[ti], frame_index, 0.0));
        iou_pairs(pred_, weak, extra_);
        if (!extra_.empty()) {
            taken_t_.assign(n_t, 0);
            for (auto &p : extra_) {
                int ti = free_t[p.first];
                taken_t_[ti] = 1;
                matches.emplace_back(ti, n_strong + p.second);
            }
            ft_.clear();
            for (int i : free_t) if (!taken_t_[i]) ft_.push_back(i);
            free_t.swap(ft_);
        }
    }
    std::vector<Track> &out = out_;
    std::vector<State> &survivors = survivors_;
    out.clear();
    survivors.clear();
    for (auto &p : matches) {
        State &st = tracks_[p.first];
        const Det &det = p.second < n_strong ? dets[p.second] : weak[p.second - n_strong];
        double gap = static_cast<double>(frame_index - st.last_frame);
        auto c_new = centre(det.box), c_old = centre(st.box);
        std::array<double, 2> observed{(c_new[0] - c_old[0]) / gap, (c_new[1] - c_old[1]) / gap};
        if (st.hits == 1) st.velocity = observed;
        else st.velocity = {0.5 * st.velocity[0] + 0.5 * observed[0], 0.5 * st.velocity[1] + 0.5 * observed[1]};
        double limit = std::max(cfg.max_speed * box_size(det.box), cfg.min_motion_px);
        double speed = std::hypot(st.velocity[0], st.velocity[1]);
        if (speed > limit) st.velocity = {st.velocity[0] * (limit / speed), st.velocity[1] * (limit / speed)};
        st.box = det.box;
        st.score = det.score;
        st.weak = p.second >= n_strong;
        st.landmarks = smooth(st, det.landmarks, gap / cfg.fps);
        st.last_frame = frame_index;
        st.hits += 1;
        out.push_back(snapshot(st, frame_index, false));
    }
    for (auto &p : matches) survivors.push_back(tracks_[p.first]);
    for (int ti : free_t) {
        const State &st = tracks_[ti];
        int64_t misses = frame_index - st.last_frame;
        if (st.hits >= cfg.min_hits && misses <= cfg.hold_frames) {
            survivors.push_back(st);
            out.push_back(snapshot(st, frame_index, true));
        }
    }
    for (int di : free_d) {
        const Det &det = dets[di];
        State st{next_id_, track_seed(cfg.seed, next_id_), frame_index, frame_index, det.box, det.score,
                 std::nullopt, {0, 0}, 1, std::nullopt};
        ++next_id_;
        if (cfg.one_euro) st.filter.emplace(cfg.min_cutoff, cfg.beta, cfg.d_cutoff);
        st.landmarks = smooth(st, det.landmarks, 1.0 / cfg.fps);
        survivors.push_back(st);
        out.push_back(snapshot(survivors.back(), frame_index, false));
    }
    tracks_.swap(survivors);  // both keep their capacity
    // stable insertion sort: a handful of tracks, and std::stable_sort takes a heap buffer every call
    for (size_t i = 1; i < out.size(); ++i)
        for (size_t j = i; j > 0 && out[j].track_id < out[j - 1].track_id; --j) std::swap(out[j], out[j - 1]);
    return out;
}

}  // namespace styleid
