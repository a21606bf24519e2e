// anonymizer.hpp - per-frame orchestration: detect -> track -> align -> latent method -> paste back,
// failing closed per face (runtime/anonymizer.py render(), without the recognizer check).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>
#include <opencv2/core.hpp>

#include "backend.hpp"
#include "blend.hpp"
#include "detect.hpp"
#include "fallback.hpp"
#include "latent.hpp"
#include "pack.hpp"
#include "styleid_edge.h"
#include "track.hpp"

namespace styleid {

struct FaceRecord {
    Track track;
    int method = STYLEID_EDGE_METHOD_LATENT;
    int fallback = STYLEID_EDGE_FALLBACK_NONE;
};

class Anonymizer {
public:
    Anonymizer(const std::string &pack_dir, const styleid_edge_options &options);

    // Anonymize one BGR frame in place; the frame's face records are kept for faces().
    void process(cv::Mat &frame);
    const std::vector<FaceRecord> &faces() const { return records_; }
    void reset(float fps);

    Detector &detector() { return *detector_; }
    LatentMethod *latent() { return latent_.get(); }
    const Pack &pack() const { return pack_; }
    int crop_size() const { return crop_size_; }
    // What runs each model: "detector: OpenVINO CPU; encoder: TensorRT 10.3.0 on ...; ..."
    const std::string &describe() const { return describe_; }

private:
    int unsuitable(const Track &t) const;
    void obscure(cv::Mat &frame, const FaceRecord &r);  // fail-closed pixelation of one face

    styleid_edge_options options_;
    Pack pack_;
    Backend backend_;
    std::string describe_;
    std::unique_ptr<Detector> detector_;
    std::unique_ptr<LatentMethod> latent_;
    Tracker tracker_;
    Paster paster_;
    int crop_size_ = 256;
    int64_t frame_index_ = 0;
    std::vector<FaceRecord> records_;
    // reused buffers
    std::vector<cv::Mat> crops_, new_faces_, batch_crops_;
    PixelateScratch pixelate_scratch_;
    ScratchMat align_small_;
    AreaResizer align_area_;
    std::vector<cv::Matx23d> matrices_;
    std::vector<size_t> batch_;
    std::vector<char> planned_;  // faces obscured before generation (drawn under the generated faces)
    std::vector<uint64_t> seeds_;
};

TrackerConfig tracker_config(const styleid_edge_options &o);

}  // namespace styleid
