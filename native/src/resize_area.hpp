// resize_area.hpp - downscaling by pixel-area averaging (cv::resize INTER_AREA for shrink factors >= 1) that makes
// no heap allocation once the largest sizes were seen: cv::resize builds its coefficient tables and row buffers
// on the heap on every call. Used where a face is shrunk before a warp (paste-back of small faces, crops of
// very large faces, the detector's working size, the encoder's input). Integer factors are bit for bit
// cv::resize's; other factors agree to within 1 grey level (float accumulation order differs).
#pragma once

#include <vector>

#include <opencv2/core.hpp>

namespace styleid {

class AreaResizer {
public:
    // dst (size, src's type) = src shrunk by area averaging. src: CV_8UC1, CV_8UC3 or CV_32FC1, at least as large
    // as size in both directions (throws std::invalid_argument otherwise). dst is created with cv::Mat::create.
    void resize(const cv::Mat &src, cv::Mat &dst, cv::Size size);

private:
    struct Axis {  // for each output index d: taps [start[d], start[d + 1]) of (source index, weight)
        std::vector<int> start, index;
        std::vector<float> weight;
        void build(int src_len, int dst_len);
    };
    template <typename T, int CN>
    void rows(const cv::Mat &src, cv::Mat &dst);  // the separable sums over x_ and y_

    Axis x_, y_;
    std::vector<float> row_, acc_;  // one horizontally resized source row; the output row being summed
};

}  // namespace styleid
