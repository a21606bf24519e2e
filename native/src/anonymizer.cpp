// anonymizer.cpp - see anonymizer.hpp.
#include "anonymizer.hpp"

#include <cmath>
#include <filesystem>

#include "align.hpp"
#include "error.hpp"
#include "fallback.hpp"

namespace styleid {

TrackerConfig tracker_config(const styleid_edge_options &o) {
    TrackerConfig c;
    c.hold_frames = o.hold_frames;
    c.seed = o.seed;
    c.fps = o.fps;
    return c;
}

namespace {

BackendConfig backend_config(const styleid_edge_options &o) {
    BackendConfig c;
    if (o.device && *o.device) c.device = o.device;
    c.threads = o.num_threads;
    if (o.engine_dir && *o.engine_dir) c.engine_dir = o.engine_dir;
    return c;
}

std::string detector_path(const std::string &pack_dir, const styleid_edge_options &o) {
    if (o.detector_path && *o.detector_path) return o.detector_path;
    std::string p = (std::filesystem::path(pack_dir) / "detector.onnx").string();
    if (!std::filesystem::is_regular_file(p))
        throw Error(STYLEID_EDGE_ERR_MODEL,
                    p + ": no detector model. Write the fp32 YuNet the Python runtime uses with "
                        "`python native/tools/prepare_assets.py --detector-only " + p +
                        "`, or give another one (options.detector_path; styleid-edge-rt --detector PATH)");
    return p;
}

}  // namespace

Anonymizer::Anonymizer(const std::string &pack_dir, const styleid_edge_options &options)
    : options_(options),
      pack_(load_pack(pack_dir)),
      backend_(backend_config(options)),
      tracker_(tracker_config(options)) {
    DetectorOptions dopt;
    dopt.threshold = options.detector_threshold;
    dopt.weak_threshold = options.weak_threshold;
    dopt.rotations = options.detector_rotations != 0;
    detector_ = std::make_unique<Detector>(backend_.core(), detector_path(pack_dir, options), backend_.openvino_device(),
                                           backend_.threads(), dopt);
    if (options.method == STYLEID_EDGE_METHOD_LATENT) {
        for (const char *role : {"encoder", "mapping", "affine", "synthesis"})
            if (!pack_.has(role))
                throw Error(STYLEID_EDGE_ERR_PACK, pack_dir + ": method latent needs the " + std::string(role) +
                                                       " model in the pack; re-export it with that model or use "
                                                       "method pixelate");
        LatentOptions lo;
        lo.strength = options.strength;
        lo.truncation = options.truncation;
        lo.use_groups = options.use_groups != 0;
        lo.batch_size = options.batch_size;
        latent_ = std::make_unique<LatentMethod>(backend_, pack_, lo);
        crop_size_ = std::max(256, std::min(pack_.resolution, 512));
    }
    describe_ = "detector: " + detector_->runner() +
                (latent_ ? "; " + latent_->runners() + "; identity ranks: " + latent_->rank_source() : std::string());
}

void Anonymizer::reset(float fps) {
    if (fps > 0) options_.fps = fps;
    tracker_ = Tracker(tracker_config(options_));
    frame_index_ = 0;
}

int Anonymizer::unsuitable(const Track &t) const {
    if (std::min(static_cast<float>(t.box[2]) - static_cast<float>(t.box[0]),
                 static_cast<float>(t.box[3]) - static_cast<float>(t.box[1])) < static_cast<float>(options_.min_face))
        return STYLEID_EDGE_FALLBACK_TOO_SMALL;
    if (!t.landmarks) return STYLEID_EDGE_FALLBACK_NO_LANDMARKS;
    Landmarks lm;
    for (int i = 0; i < 10; ++i) {
        lm[i] = static_cast<float>((*t.landmarks)[i]);
        if (!std::isfinite(lm[i])) return STYLEID_EDGE_FALLBACK_NO_LANDMARKS;
    }
    if (std::abs(yaw_proxy(lm)) > options_.max_yaw) return STYLEID_EDGE_FALLBACK_PROFILE;
    return STYLEID_EDGE_FALLBACK_NONE;
}

void Anonymizer::process(cv::Mat &frame) {
    // steady state allocates nothing: detector, tracker, crops, model inputs and paste scratch are all reused
    const std::vector<Detection> &dets = detector_->detect(frame);
    const std::vector<Track> &tracks = tracker_.update(dets, frame_index_++);
    records_.clear();
    for (const auto &t : tracks) {
        FaceRecord r;
        r.track = t;
        r.method = options_.method;
        records_.push_back(r);
    }
    if (latent_) {
        // align every suitable face on the unmodified frame first, as the Python runtime does
        if (crops_.size() < records_.size()) crops_.resize(records_.size());  // never shrink: keep the buffers
        matrices_.resize(records_.size());
        batch_.clear();
        for (size_t i = 0; i < records_.size(); ++i) {
            FaceRecord &r = records_[i];
            r.fallback = unsuitable(r.track);
            if (r.fallback != STYLEID_EDGE_FALLBACK_NONE) {
                r.method = STYLEID_EDGE_METHOD_PIXELATE;
                continue;
            }
            try {
                Landmarks lm;
                for (int k = 0; k < 10; ++k) lm[k] = static_cast<float>((*r.track.landmarks)[k]);
                matrices_[i] = ffhq_crop(frame, lm, crop_size_, crops_[i], align_small_, align_area_);
                batch_.push_back(i);
            } catch (const std::exception &) {
                r.method = STYLEID_EDGE_METHOD_PIXELATE;
                r.fallback = STYLEID_EDGE_FALLBACK_ALIGN_ERROR;
            }
        }
        // Faces planned to be obscured are drawn now, under the generated faces: a large fallback box (often a
        // false detection) must not cover faces anonymized properly. Later failures are drawn last, on top.
        planned_.assign(records_.size(), 0);
        for (size_t i = 0; i < records_.size(); ++i) {
            if (records_[i].method != STYLEID_EDGE_METHOD_PIXELATE) continue;
            planned_[i] = 1;
            obscure(frame, records_[i]);
        }
        const size_t step = latent_->max_faces_per_call();  // batch_size, within the engines' profiles
        for (size_t start = 0; start < batch_.size(); start += step) {
            size_t end = std::min(batch_.size(), start + step);
            std::vector<cv::Mat> &crops = batch_crops_;
            crops.clear();
            seeds_.clear();
            for (size_t j = start; j < end; ++j) {
                crops.push_back(crops_[batch_[j]]);  // a header: shares the buffer
                seeds_.push_back(records_[batch_[j]].track.seed);
            }
            try {
                latent_->generate(crops, seeds_, new_faces_);
            } catch (const std::exception &) {  // fail closed for the whole batch
                for (size_t j = start; j < end; ++j) {
                    records_[batch_[j]].method = STYLEID_EDGE_METHOD_PIXELATE;
                    records_[batch_[j]].fallback = STYLEID_EDGE_FALLBACK_MODEL_ERROR;
                }
                continue;
            }
            for (size_t j = start; j < end; ++j) {
                try {
                    paster_.paste(frame, new_faces_[j - start], matrices_[batch_[j]]);
                } catch (const std::exception &) {
                    records_[batch_[j]].method = STYLEID_EDGE_METHOD_PIXELATE;
                    records_[batch_[j]].fallback = STYLEID_EDGE_FALLBACK_PASTE_ERROR;
                }
            }
        }
    }
    // the rest last, on top: these faces must never show
    for (size_t i = 0; i < records_.size(); ++i) {
        if (records_[i].method != STYLEID_EDGE_METHOD_PIXELATE) continue;
        if (latent_ && planned_[i]) continue;  // drawn before generation
        obscure(frame, records_[i]);
    }
}

void Anonymizer::obscure(cv::Mat &frame, const FaceRecord &r) {
    std::array<float, 4> box{static_cast<float>(r.track.box[0]), static_cast<float>(r.track.box[1]),
                             static_cast<float>(r.track.box[2]), static_cast<float>(r.track.box[3])};
    pixelate(frame, box, pixelate_scratch_);
}

}  // namespace styleid
