// detect.hpp - YuNet face detection, run the way the Python runtime's RobustDetector runs it:
// a working-size pass, +-30 degree rotated passes and full-resolution tiles, merged by NMS.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "model.hpp"

namespace styleid {

struct Detection {
    std::array<float, 4> box{};       // x1, y1, x2, y2
    float score = 0.f;
    std::array<float, 10> landmarks{};  // 5 (x, y), ArcFace template order
};

struct DetectorOptions {
    float threshold = 0.5f;
    int working_size = 640;
    int tile_size = 1280;  // 0: no tiles
    int tile_overlap = 128;
    bool rotations = true;  // passes at -30 and +30 degrees
    float merge_iou = 0.4f;
};

// Greedy IoU NMS; indices kept, best score first (stable for equal scores).
std::vector<size_t> nms(const std::vector<Detection> &dets, float iou);

class Detector {
public:
    Detector(ov::Core &core, const std::string &model_path, const std::string &device, int threads,
             DetectorOptions options);
    // All faces of a BGR frame, best score first.
    std::vector<Detection> detect(const cv::Mat &frame);

private:
    std::vector<Detection> single_pass(const cv::Mat &img);  // thresholded, NMS 0.3, image coordinates
    OvModel model_;
    DetectorOptions options_;
    cv::Mat padded_;             // reused per pass
    std::vector<float> blob_;    // reused per pass
};

}  // namespace styleid
