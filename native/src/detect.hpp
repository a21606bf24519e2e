// detect.hpp - YuNet face detection, run the way the Python runtime's RobustDetector runs it:
// a working-size pass, +-30 degree rotated passes and full-resolution tiles, merged by NMS.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "fixed_warp.hpp"
#include "resize_area.hpp"
#include "scratch.hpp"
#include "model.hpp"

namespace styleid {

struct Detection {
    std::array<float, 4> box{};       // x1, y1, x2, y2
    float score = 0.f;
    std::array<float, 10> landmarks{};  // 5 (x, y), ArcFace template order
    bool weak = false;  // score below the threshold (kept down to weak_threshold): may only continue a track
};

struct DetectorOptions {
    float threshold = 0.5f;
    float weak_threshold = 0.f;  // > 0 and < threshold: also keep faces from this score, flagged weak
    int working_size = 640;
    int tile_size = 1280;  // 0: no tiles
    int tile_overlap = 128;
    bool rotations = true;  // passes at -30 and +30 degrees
    float merge_iou = 0.4f;
};

// Greedy IoU NMS; indices kept, strong before weak, then best score first (stable for equal scores).
std::vector<size_t> nms(const std::vector<Detection> &dets, float iou);

// The same into caller-owned vectors (reused: no allocation once their capacity suffices).
struct NmsScratch {
    std::vector<size_t> order;
    std::vector<char> removed;
};
void nms(const std::vector<Detection> &dets, float iou, std::vector<size_t> &keep, NmsScratch &scratch);

class Detector {
public:
    Detector(ov::Core &core, const std::string &model_path, const std::string &device, int threads,
             DetectorOptions options);
    // All faces of a BGR frame: strong ones best score first, then the weak ones (if weak_threshold is set). The result is the detector's own buffer: valid until the
    // next detect() call (steady state: no heap allocation; the model keeps one compiled copy per pass shape).
    const std::vector<Detection> &detect(const cv::Mat &frame);
    std::string runner() const { return model_.runner(); }

private:
    // thresholded, NMS 0.3, image coordinates, into pass_
    void single_pass(const cv::Mat &img);
    OvModel model_;
    DetectorOptions options_;
    // reused frame to frame
    ScratchMat work_;  // the frame shrunk to the working size
    AreaResizer area_;
    cv::Mat rotated_;
    FixedWarp rotate_[2];  // the -30 and +30 degree passes
    std::vector<Detection> found_, pass_, all_, out_;
    std::vector<size_t> keep_;
    NmsScratch nms_scratch_;
    std::vector<std::pair<int, int>> xspans_, yspans_;
};

}  // namespace styleid
