// latent.cpp - see latent.hpp. Pre/post-processing follows runtime/methods.py exactly
// (BGR->RGB, /127.5 - 1, INTER_AREA/INTER_CUBIC resizes, +0.5 rounding).
#include "latent.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <opencv2/imgproc.hpp>

#include "error.hpp"
#include "npy.hpp"
#include "seeds.hpp"

namespace styleid {

std::vector<int> identity_rows(int n_latent) {
    int lo = static_cast<int>(std::nearbyint(5.0 * n_latent / 18.0));
    int hi = std::max(lo, static_cast<int>(std::nearbyint(9.0 * n_latent / 18.0)));
    std::vector<int> rows;
    for (int r = lo; r <= hi; ++r) rows.push_back(r);
    return rows;
}

ChannelRank load_channel_rank(const Pack &pack, bool use_groups) {
    const int n_s = pack.n_styles();
    std::vector<int64_t> channels, groups;
    bool has_channels = pack.ranks.count("channels") != 0, has_groups = pack.ranks.count("groups") != 0;
    if (has_channels) channels = read_npy_int(pack.path(pack.ranks.at("channels")));
    if (has_groups) groups = read_npy_int(pack.path(pack.ranks.at("groups")));
    ChannelRank out;
    if ((use_groups || !has_channels) && has_groups) {
        std::vector<std::vector<int64_t>> group_index;  // 256-channel groups, toRGB included
        int64_t start = 0;
        for (const auto &l : pack.layers) {
            for (int g = 0; g < l.size; g += 256) {
                std::vector<int64_t> idx;
                for (int64_t c = start + g; c < start + std::min(g + 256, l.size); ++c) idx.push_back(c);
                group_index.push_back(idx);
            }
            start += l.size;
        }
        for (int64_t g : groups) {
            if (g < 0 || g >= static_cast<int64_t>(group_index.size()))
                throw Error(STYLEID_EDGE_ERR_PACK, pack.root + ": group rank indexes group " + std::to_string(g) +
                                                       ", the pack has " + std::to_string(group_index.size()) +
                                                       "; recalibrate with `styleid-edge calibrate ranks`");
            out.rank.insert(out.rank.end(), group_index[g].begin(), group_index[g].end());
        }
        out.source = "pack group rank";
    } else if (has_channels) {
        for (int64_t c : channels)
            if (c < 0 || c >= n_s)
                throw Error(STYLEID_EDGE_ERR_PACK, pack.root + ": channel rank indexes past S (" + std::to_string(n_s) +
                                                       " channels); recalibrate with `styleid-edge calibrate ranks`");
        out.rank = channels;
        out.source = "pack channel rank";
    } else {
        std::vector<int> rows = identity_rows(pack.n_latent);
        std::vector<int64_t> first, rest;
        int64_t start = 0;
        for (const auto &l : pack.layers) {
            if (!l.is_torgb) {
                bool id_row = std::find(rows.begin(), rows.end(), l.w_index) != rows.end();
                for (int64_t c = start; c < start + l.size; ++c) (id_row ? first : rest).push_back(c);
            }
            start += l.size;
        }
        out.rank = first;
        out.rank.insert(out.rank.end(), rest.begin(), rest.end());
        out.source = "structural prior (pack has no identity ranks; run `styleid-edge calibrate ranks`)";
    }
    if (out.rank.empty()) throw Error(STYLEID_EDGE_ERR_PACK, pack.root + ": the identity rank is empty");
    return out;
}

LatentMethod::LatentMethod(Backend &backend, const Pack &pack, const LatentOptions &options)
    : pack_(pack),
      options_(options),
      encoder_(backend.pack_model(pack.model_path("encoder"), "encoder", {"image"}, {"w_plus"})),
      mapping_(backend.pack_model(pack.model_path("mapping"), "mapping", {"z"}, {"w"})),
      affine_(backend.pack_model(pack.model_path("affine"), "affine", {"w_plus"}, {"styles"})),
      synthesis_(backend.pack_model(pack.model_path("synthesis"), "synthesis", {"styles"}, {"image"})) {
    encoder_size_ = static_cast<int>(encoder_->input_dim(0, 3));
    if (encoder_size_ <= 0)
        throw Error(STYLEID_EDGE_ERR_MODEL, encoder_->path() + ": the encoder input needs a static size "
                                                              "(B, 3, S, S); re-export the pack");
    float strength = options.strength;
    if (!(strength > 0.f)) {
        auto it = pack.strength_defaults.find("latent");
        strength = it != pack.strength_defaults.end() ? static_cast<float>(it->second) : 0.5f;
    }
    if (!(strength > 0.f && strength <= 1.f))
        throw Error(STYLEID_EDGE_ERR_ARGUMENT, "strength must be in (0, 1], got " + std::to_string(strength));
    if (!(options.truncation >= 0.f && options.truncation <= 1.5f))
        throw Error(STYLEID_EDGE_ERR_ARGUMENT, "truncation must be in [0, 1.5]");
    ChannelRank rank = load_channel_rank(pack, options.use_groups);
    rank_source_ = rank.source;
    size_t k = std::max<size_t>(1, static_cast<size_t>(std::nearbyint(static_cast<double>(strength) * rank.rank.size())));
    swap_.assign(rank.rank.begin(), rank.rank.begin() + std::min(k, rank.rank.size()));
}

size_t LatentMethod::max_faces_per_call() const {
    size_t n = static_cast<size_t>(std::max(1, options_.batch_size));
    if (size_t m = encoder_->max_batch()) n = std::min(n, m);
    if (size_t m = synthesis_->max_batch()) n = std::min(n, m);
    if (size_t m = affine_->max_batch()) n = std::min(n, std::max<size_t>(1, m / 2));
    return n;
}

std::string LatentMethod::runners() const {
    return "encoder: " + encoder_->runner() + "; mapping: " + mapping_->runner() + "; affine: " + affine_->runner() +
           "; synthesis: " + synthesis_->runner();
}

const std::vector<float> &LatentMethod::pseudo_w(uint64_t seed) {
    auto it = w_cache_.find(seed);
    if (it != w_cache_.end()) return it->second;
    const int dim = pack_.style_dim;
    std::vector<float> z(dim);
    seed_z(seed, z.data(), z.size());
    mapping_->set_input(0, z.data(), Dims{1, static_cast<size_t>(dim)});
    mapping_->infer();
    TensorView w = mapping_->output(0);
    if (w.size() != static_cast<size_t>(dim))
        throw Error(STYLEID_EDGE_ERR_MODEL, mapping_->path() + ": output w has " + std::to_string(w.size()) +
                                                " values, expected " + std::to_string(dim));
    const float *pw = w.data;
    std::vector<float> out(dim);
    const float psi = options_.truncation;
    for (int i = 0; i < dim; ++i) out[i] = pack_.latent_avg[i] + psi * (pw[i] - pack_.latent_avg[i]);
    if (w_cache_.size() >= 4096) w_cache_.clear();  // long runs with many tracks: keep memory flat
    return w_cache_.emplace(seed, std::move(out)).first->second;
}

void LatentMethod::generate(const std::vector<cv::Mat> &crops, const std::vector<uint64_t> &seeds,
                            std::vector<cv::Mat> &faces, std::vector<float> *w_plus, std::vector<float> *styles) {
    const size_t b = crops.size();
    faces.resize(b);
    if (b == 0) return;
    if (seeds.size() != b) throw Error(STYLEID_EDGE_ERR_ARGUMENT, "generate: one seed per crop");
    const int es = encoder_size_, nl = pack_.n_latent, sd = pack_.style_dim, ns = pack_.n_styles();
    const size_t plane = static_cast<size_t>(es) * es;
    // encoder input: RGB float (B,3,es,es) in [-1, 1]
    float *enc_in = encoder_->input(0, Dims{b, 3, static_cast<size_t>(es), static_cast<size_t>(es)});
    for (size_t i = 0; i < b; ++i) {
        const cv::Mat *c = &crops[i];
        if (c->rows != es) {
            if (c->rows > es) area_.resize(*c, resized_, cv::Size(es, es));  // = cv::resize INTER_AREA, no heap
            else cubic_.resize(*c, resized_, cv::Size(es, es));  // = cv::resize INTER_CUBIC, no heap
            c = &resized_;
        }
        float *dst = enc_in + i * 3 * plane;
        for (int y = 0; y < es; ++y) {
            const uint8_t *row = c->ptr<uint8_t>(y);
            for (int x = 0; x < es; ++x)
                for (int ch = 0; ch < 3; ++ch)
                    dst[(2 - ch) * plane + static_cast<size_t>(y) * es + x] = static_cast<float>(row[3 * x + ch]) / 127.5f - 1.0f;
        }
    }
    encoder_->infer();
    TensorView w_src = encoder_->output(0);
    const size_t wrow = static_cast<size_t>(nl) * sd;
    if (w_src.size() != b * wrow)
        throw Error(STYLEID_EDGE_ERR_MODEL, encoder_->path() + ": w_plus has " + std::to_string(w_src.size()) +
                                                " values, expected B x " + std::to_string(nl) + " x " + std::to_string(sd));
    // affine on [w_src; w_tar], w_tar = the seed's W repeated over the rows
    if (w_plus) w_plus->assign(w_src.data, w_src.data + b * wrow);
    // the pseudo-identity W (mapping runs only for a seed not seen yet) before the affine input is written:
    // the mapping and affine requests are distinct, but keep the order obvious
    for (size_t i = 0; i < b; ++i) (void)pseudo_w(seeds[i]);
    float *aff_in = affine_->input(0, Dims{2 * b, static_cast<size_t>(nl), static_cast<size_t>(sd)});
    std::memcpy(aff_in, w_src.data, b * wrow * sizeof(float));
    for (size_t i = 0; i < b; ++i) {
        const std::vector<float> &w = pseudo_w(seeds[i]);
        for (int r = 0; r < nl; ++r) std::memcpy(aff_in + (b + i) * wrow + static_cast<size_t>(r) * sd, w.data(), sd * sizeof(float));
    }
    affine_->infer();
    TensorView s_all = affine_->output(0);
    if (s_all.size() != 2 * b * ns)
        throw Error(STYLEID_EDGE_ERR_MODEL, affine_->path() + ": styles has " + std::to_string(s_all.size()) +
                                                " values, expected 2B x " + std::to_string(ns));
    const float *ps = s_all.data;
    float *syn_in = synthesis_->input(0, Dims{b, static_cast<size_t>(ns)});
    std::memcpy(syn_in, ps, b * ns * sizeof(float));
    for (size_t i = 0; i < b; ++i)
        for (int64_t c : swap_) syn_in[i * ns + c] = ps[(b + i) * ns + c];
    if (styles) styles->assign(syn_in, syn_in + b * ns);
    synthesis_->infer();
    TensorView img = synthesis_->output(0);
    const int r = pack_.resolution;
    const size_t rplane = static_cast<size_t>(r) * r;
    if (img.size() != b * 3 * rplane)
        throw Error(STYLEID_EDGE_ERR_MODEL, synthesis_->path() + ": image has the wrong size; expected B x 3 x " +
                                                std::to_string(r) + " x " + std::to_string(r));
    const float *pi = img.data;
    const int crop_size = crops[0].rows;
    cv::Mat &rgb = rgb_;
    rgb.create(r, r, CV_8UC3);
    for (size_t i = 0; i < b; ++i) {
        const float *src = pi + i * 3 * rplane;
        for (int y = 0; y < r; ++y) {
            uint8_t *row = rgb.ptr<uint8_t>(y);
            for (int x = 0; x < r; ++x)
                for (int ch = 0; ch < 3; ++ch) {
                    float v = (src[ch * rplane + static_cast<size_t>(y) * r + x] + 1.0f) * 127.5f + 0.5f;
                    v = v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f;  // NaN -> 0
                    row[3 * x + ch] = static_cast<uint8_t>(v);
                }
        }
        const cv::Mat *sized = &rgb;
        if (r != crop_size) {
            if (r > crop_size) area_.resize(rgb, sized_, cv::Size(crop_size, crop_size));  // 1024 -> 512: no heap
            else cubic_.resize(rgb, sized_, cv::Size(crop_size, crop_size));  // packs under 256 px: = INTER_CUBIC
            sized = &sized_;
        }
        cv::cvtColor(*sized, faces[i], cv::COLOR_RGB2BGR);
    }
}

}  // namespace styleid
