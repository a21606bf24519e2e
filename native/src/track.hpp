// track.hpp - face tracking: stable ids, One Euro-smoothed landmarks, hold-over on missed detections.
// A port of styleid_edge/runtime/track.py (same matching, smoothing, hold-over and seeds).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "detect.hpp"

namespace styleid {

struct TrackerConfig {
    double iou_match = 0.3;
    int hold_frames = 5;
    int min_hits = 1;
    bool one_euro = true;
    double min_cutoff = 1.0, beta = 2.0, d_cutoff = 1.0;
    double fps = 30.0;
    double landmark_match = 0.75;
    double hold_grow = 0.10;
    double max_speed = 0.5;
    double min_motion_px = 24.0;  // floor of the velocity cap and landmark gate (track.py TrackerConfig)
    uint64_t seed = 0;
    double max_landmark_lag = 0.15;
};

using Box = std::array<double, 4>;
using Points = std::array<double, 10>;

struct Track {
    int64_t track_id = 0;
    Box box{};
    std::optional<Points> landmarks;
    double score = 0;
    bool held = false;
    uint64_t seed = 0;
    bool weak = false;  // matched this frame to a weak detection
};

// Minimum-cost assignment (Hungarian with potentials); (row, col) pairs sorted by row.
std::vector<std::pair<int, int>> linear_assignment(const std::vector<double> &cost, int rows, int cols);

// The same into caller-owned vectors (reused: no allocation once their capacity suffices).
struct AssignmentScratch {
    std::vector<double> u, v, min_slack;
    std::vector<int> owner, way;
    std::vector<char> used;
};
void linear_assignment(const std::vector<double> &cost, int rows, int cols, std::vector<std::pair<int, int>> &pairs,
                       AssignmentScratch &scratch);

class OneEuro {
public:
    OneEuro(double min_cutoff, double beta, double d_cutoff) : min_cutoff_(min_cutoff), beta_(beta), d_cutoff_(d_cutoff) {}
    void reset() { started_ = false; }
    Points operator()(const Points &x, double dt, double speed_scale);

private:
    double min_cutoff_, beta_, d_cutoff_;
    bool started_ = false;
    Points x_{}, dx_{};
};

class Tracker {
public:
    explicit Tracker(TrackerConfig config) : config_(config) {}
    // Faces to anonymize in frame `frame_index` (strictly increasing), sorted by track id. The result is the
    // tracker's own buffer, valid until the next update() (steady state: no heap allocation).
    const std::vector<Track> &update(const std::vector<Detection> &detections, int64_t frame_index);

private:
    struct State {
        int64_t id;
        uint64_t seed;
        int64_t start_frame, last_frame;
        Box box;
        double score;
        std::optional<Points> landmarks;
        std::array<double, 2> velocity{0, 0};
        int hits = 1;
        std::optional<OneEuro> filter;
        bool weak = false;  // last matched detection was weak
    };
    struct Det {
        Box box;
        double score;
        std::optional<Points> landmarks;
    };
    Box predicted_box(const State &s, int64_t frame, double grow) const;
    std::optional<Points> predicted_landmarks(const State &s, int64_t frame) const;
    std::optional<Points> smooth(State &s, const std::optional<Points> &lm, double dt);
    Track snapshot(const State &s, int64_t frame, bool held) const;
    // Optimal one-to-one (row, col) pairs on 1 - IoU of boxes x dets; pairs under iou_match dropped. Into `out`.
    void iou_pairs(const std::vector<Box> &boxes, const std::vector<Det> &dets, std::vector<std::pair<int, int>> &out);

    TrackerConfig config_;
    std::vector<State> tracks_;
    int64_t next_id_ = 1;
    std::optional<int64_t> last_frame_;
    // scratch reused frame to frame
    std::vector<Det> dets_, weak_;
    std::vector<std::pair<int, int>> matches_, pairs_, extra_;
    std::vector<int> free_t_, free_d_, ft_, fd_;
    std::vector<Box> pred_;
    std::vector<double> cost_, cost2_;
    std::vector<char> taken_t_, taken_d_;
    AssignmentScratch assign_;
    std::vector<Track> out_;
    std::vector<State> survivors_;
};

}  // namespace styleid
