// latent.hpp - the StyleID latent method: encode -> StyleSpace channel swap toward a per-track
// pseudo-identity -> synthesis (runtime/methods.py + identity.py, method "latent").
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "backend.hpp"
#include "model.hpp"
#include "pack.hpp"
#include "resize_area.hpp"
#include "resize_cubic.hpp"

namespace styleid {

// Flat S indices the latent method swaps, most identity-bearing first (pack channel rank, group rank,
// or the structural prior when the pack has no ranks).
struct ChannelRank {
    std::vector<int64_t> rank;
    std::string source;
};
ChannelRank load_channel_rank(const Pack &pack, bool use_groups);
std::vector<int> identity_rows(int n_latent);

struct LatentOptions {
    float strength = -1.f;   // <= 0: the pack's default, else 0.5
    float truncation = 0.7f;
    bool use_groups = false;
    int batch_size = 16;
};

class LatentMethod {
public:
    LatentMethod(Backend &backend, const Pack &pack, const LatentOptions &options);

    // New faces for aligned BGR crops (crop_size^2); faces[i] is crop_size^2 BGR. Optional intermediates
    // (w_plus: B x n_latent x style_dim, styles: B x S after the swap) for the parity tests.
    void generate(const std::vector<cv::Mat> &crops, const std::vector<uint64_t> &seeds, std::vector<cv::Mat> &faces,
                  std::vector<float> *w_plus = nullptr, std::vector<float> *styles = nullptr);

    int encoder_size() const { return encoder_size_; }
    int n_swapped() const { return static_cast<int>(swap_.size()); }
    const std::string &rank_source() const { return rank_source_; }
    bool ranks_calibrated() const { return rank_source_.rfind("pack ", 0) == 0; }  // the pack's own ranks
    // "encoder: OpenVINO CPU; mapping: ...": what runs each model
    std::string runners() const;
    // The most faces one generate() call may take: options.batch_size, lowered to what fixed-profile engines
    // accept (encoder and synthesis: B, affine: 2B).
    size_t max_faces_per_call() const;

private:
    const std::vector<float> &pseudo_w(uint64_t seed);

    const Pack &pack_;
    LatentOptions options_;
    std::unique_ptr<Model> encoder_, mapping_, affine_, synthesis_;
    int encoder_size_ = 0;
    std::vector<int64_t> swap_;
    std::string rank_source_;
    std::map<uint64_t, std::vector<float>> w_cache_;  // seed -> truncated W (bounded)
    // buffers reused frame to frame
    // (model inputs are written straight into the models' own input buffers: Model::input)
    cv::Mat resized_, rgb_, sized_;
    AreaResizer area_;
    CubicResizer cubic_;
};

}  // namespace styleid
