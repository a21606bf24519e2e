// c_api.cpp - the C API: argument checks, exception -> status translation, per-thread last error.
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include <opencv2/core.hpp>

#include "align.hpp"
#include "anonymizer.hpp"
#include "error.hpp"
#include "seeds.hpp"
#include "styleid_edge.h"

struct styleid_edge {
    std::unique_ptr<styleid::Anonymizer> anonymizer;
};

namespace {

// The one piece of process-wide state: the last error message, one per thread (as errno).
thread_local std::string t_last_error;

styleid_edge_status fail(styleid_edge_status status, const std::string &message) {
    t_last_error = message;
    return status;
}

template <typename F>
styleid_edge_status guarded(const char *where, F &&body) {
    try {
        t_last_error.clear();
        body();
        return STYLEID_EDGE_OK;
    } catch (const styleid::Error &e) {
        return fail(e.status(), std::string(where) + ": " + e.what());
    } catch (const cv::Exception &e) {
        return fail(STYLEID_EDGE_ERR_INTERNAL, std::string(where) + ": OpenCV error: " + e.what());
    } catch (const std::bad_alloc &) {
        return fail(STYLEID_EDGE_ERR_INTERNAL, std::string(where) + ": out of memory");
    } catch (const std::exception &e) {
        return fail(STYLEID_EDGE_ERR_INTERNAL, std::string(where) + ": " + e.what());
    } catch (...) {
        return fail(STYLEID_EDGE_ERR_INTERNAL, std::string(where) + ": unknown error");
    }
}

void check_image(const void *data, int width, int height, size_t stride, const char *name) {
    if (!data) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, std::string(name) + " is NULL");
    if (width <= 0 || height <= 0 || width > 16384 || height > 16384)
        throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, std::string(name) + ": width and height must be in 1..16384");
    if (stride != 0 && stride < static_cast<size_t>(width) * 3)
        throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, std::string(name) + ": stride is smaller than width * 3");
}

cv::Mat wrap(const uint8_t *data, int width, int height, size_t stride) {
    return cv::Mat(height, width, CV_8UC3, const_cast<uint8_t *>(data), stride ? stride : static_cast<size_t>(cv::Mat::AUTO_STEP));
}

styleid::Anonymizer &need(styleid_edge *h) {
    if (!h || !h->anonymizer) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "handle is NULL");
    return *h->anonymizer;
}

void fill_face(styleid_edge_face &f, const styleid::Track &t, int method, int fallback) {
    std::memset(&f, 0, sizeof f);
    f.track_id = t.track_id;
    for (int i = 0; i < 4; ++i) f.box[i] = static_cast<float>(t.box[i]);
    for (int i = 0; i < 10; ++i) f.landmarks[i] = t.landmarks ? static_cast<float>((*t.landmarks)[i]) : NAN;
    f.score = static_cast<float>(t.score);
    f.held = t.held ? 1 : 0;
    f.method = method;
    f.fallback = fallback;
    f.seed = t.seed;
    f.weak = t.weak ? 1 : 0;
}

void check_options(const styleid_edge_options &o) {
    auto bad = [](const std::string &m) { throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "options: " + m); };
    if (o.method != STYLEID_EDGE_METHOD_LATENT && o.method != STYLEID_EDGE_METHOD_PIXELATE) bad("unknown method");
    if (!(o.strength <= 1.f)) bad("strength must be in (0, 1] (or <= 0 for the pack default), not NaN");
    if (!(o.detector_threshold > 0.f && o.detector_threshold <= 1.f)) bad("detector_threshold must be in (0, 1]");
    if (!(o.weak_threshold >= 0.f && o.weak_threshold <= 1.f)) bad("weak_threshold must be in [0, 1] (0: off)");
    if (o.min_face < 0) bad("min_face must be >= 0");
    if (!(o.max_yaw >= 0.f)) bad("max_yaw must be >= 0");
    if (o.hold_frames < 0) bad("hold_frames must be >= 0");
    if (!(o.fps > 0.f)) bad("fps must be > 0");
    if (o.batch_size < 1) bad("batch_size must be >= 1");
    if (o.num_threads < 0) bad("num_threads must be >= 0");
}

}  // namespace

namespace styleid {
styleid_edge_status set_error(styleid_edge_status status, const std::string &message) { return fail(status, message); }
void clear_error() { t_last_error.clear(); }
}  // namespace styleid

extern "C" {

const char *styleid_edge_version(void) { return STYLEID_EDGE_VERSION; }

void styleid_edge_options_init(styleid_edge_options *o) {
    if (!o) return;
    std::memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->method = STYLEID_EDGE_METHOD_LATENT;
    o->strength = -1.f;
    o->truncation = 0.7f;
    o->detector_threshold = 0.5f;
    o->detector_rotations = 1;
    o->min_face = 24;
    o->max_yaw = 0.8f;
    o->hold_frames = 5;
    o->fps = 30.f;
    o->batch_size = 16;
    o->weak_threshold = 0.3f;
}

const char *styleid_edge_last_error(void) { return t_last_error.c_str(); }

styleid_edge_status styleid_edge_create(const char *pack_dir, const styleid_edge_options *options, styleid_edge **out) {
    if (out) *out = nullptr;
    return guarded("styleid_edge_create", [&] {
        if (!out) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "out is NULL");
        if (!pack_dir || !*pack_dir) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "pack_dir is NULL or empty");
        styleid_edge_options o;
        styleid_edge_options_init(&o);
        if (options) {
            if (options->struct_size != sizeof(styleid_edge_options))
                throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT,
                                     "options.struct_size does not match this library; call "
                                     "styleid_edge_options_init() and rebuild against this styleid_edge.h");
            o = *options;
        }
        check_options(o);
        auto handle = std::make_unique<styleid_edge>();
        handle->anonymizer = std::make_unique<styleid::Anonymizer>(pack_dir, o);
        *out = handle.release();
    });
}

void styleid_edge_destroy(styleid_edge *handle) { delete handle; }

styleid_edge_status styleid_edge_anonymize(styleid_edge *handle, uint8_t *bgr, int width, int height, size_t stride) {
    return guarded("styleid_edge_anonymize", [&] {
        auto &a = need(handle);
        check_image(bgr, width, height, stride, "bgr");
        cv::Mat frame = wrap(bgr, width, height, stride);
        a.process(frame);
    });
}

styleid_edge_status styleid_edge_anonymize_into(styleid_edge *handle, const uint8_t *in, int width, int height,
                                                size_t in_stride, uint8_t *out, size_t out_stride) {
    return guarded("styleid_edge_anonymize_into", [&] {
        auto &a = need(handle);
        check_image(in, width, height, in_stride, "in");
        check_image(out, width, height, out_stride, "out");
        cv::Mat dst = wrap(out, width, height, out_stride);
        if (in != out) wrap(in, width, height, in_stride).copyTo(dst);
        a.process(dst);
    });
}

styleid_edge_status styleid_edge_get_faces(const styleid_edge *handle, styleid_edge_face *faces, size_t capacity,
                                           size_t *count) {
    return guarded("styleid_edge_get_faces", [&] {
        auto &a = need(const_cast<styleid_edge *>(handle));
        if (!count) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "count is NULL");
        const auto &recs = a.faces();
        *count = recs.size();
        if (capacity && !faces) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "faces is NULL");
        for (size_t i = 0; i < recs.size() && i < capacity; ++i)
            fill_face(faces[i], recs[i].track, recs[i].method, recs[i].fallback);
        if (capacity < recs.size())
            throw styleid::Error(STYLEID_EDGE_ERR_BUFFER, "faces holds " + std::to_string(capacity) + " records, " +
                                                              std::to_string(recs.size()) + " needed");
    });
}

styleid_edge_status styleid_edge_reset(styleid_edge *handle, float fps) {
    return guarded("styleid_edge_reset", [&] { need(handle).reset(fps); });
}

styleid_edge_status styleid_edge_get_info(const styleid_edge *handle, styleid_edge_info *info) {
    return guarded("styleid_edge_get_info", [&] {
        auto &a = need(const_cast<styleid_edge *>(handle));
        if (!info) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "info is NULL");
        const auto &p = a.pack();
        info->resolution = p.resolution;
        info->n_latent = p.n_latent;
        info->style_dim = p.style_dim;
        info->n_styles = p.n_styles();
        info->crop_size = a.crop_size();
        info->encoder_size = a.latent() ? a.latent()->encoder_size() : 0;
        info->n_swapped = a.latent() ? a.latent()->n_swapped() : 0;
        info->synthetic = p.synthetic ? 1 : 0;
        info->ranks_calibrated = a.latent() && a.latent()->ranks_calibrated() ? 1 : 0;
    });
}

const char *styleid_edge_describe(const styleid_edge *handle) {
    if (!handle || !handle->anonymizer) return "";
    return handle->anonymizer->describe().c_str();
}

styleid_edge_status styleid_edge_detect(styleid_edge *handle, const uint8_t *bgr, int width, int height, size_t stride,
                                        styleid_edge_face *faces, size_t capacity, size_t *count) {
    return guarded("styleid_edge_detect", [&] {
        auto &a = need(handle);
        check_image(bgr, width, height, stride, "bgr");
        if (!count) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "count is NULL");
        if (capacity && !faces) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "faces is NULL");
        auto dets = a.detector().detect(wrap(bgr, width, height, stride));
        *count = dets.size();
        for (size_t i = 0; i < dets.size() && i < capacity; ++i) {
            styleid::Track t;
            t.track_id = -1;
            for (int k = 0; k < 4; ++k) t.box[k] = dets[i].box[k];
            styleid::Points p;
            for (int k = 0; k < 10; ++k) p[k] = dets[i].landmarks[k];
            t.landmarks = p;
            t.score = dets[i].score;
            t.weak = dets[i].weak;
            fill_face(faces[i], t, STYLEID_EDGE_METHOD_LATENT, STYLEID_EDGE_FALLBACK_NONE);
        }
        if (capacity < dets.size())
            throw styleid::Error(STYLEID_EDGE_ERR_BUFFER, "faces holds " + std::to_string(capacity) + " records, " +
                                                              std::to_string(dets.size()) + " needed");
    });
}

styleid_edge_status styleid_edge_align(styleid_edge *handle, const uint8_t *bgr, int width, int height, size_t stride,
                                       const float landmarks[10], uint8_t *crop_out, double matrix_out[6]) {
    return guarded("styleid_edge_align", [&] {
        auto &a = need(handle);
        check_image(bgr, width, height, stride, "bgr");
        if (!landmarks || !crop_out) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "landmarks or crop_out is NULL");
        styleid::Landmarks lm;
        for (int i = 0; i < 10; ++i) lm[i] = landmarks[i];
        const int size = a.crop_size();
        cv::Mat crop(size, size, CV_8UC3, crop_out);
        cv::Mat written;
        cv::Matx23d m;
        try {
            m = styleid::ffhq_crop(wrap(bgr, width, height, stride), lm, size, written);
        } catch (const std::invalid_argument &e) {
            throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, e.what());
        }
        written.copyTo(crop);
        if (matrix_out)
            for (int i = 0; i < 6; ++i) matrix_out[i] = m(i / 3, i % 3);
    });
}

styleid_edge_status styleid_edge_generate(styleid_edge *handle, const uint8_t *crop_bgr, uint64_t seed, float *w_plus,
                                          float *styles, uint8_t *face) {
    return guarded("styleid_edge_generate", [&] {
        auto &a = need(handle);
        if (!crop_bgr) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "crop_bgr is NULL");
        if (!a.latent())
            throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "this handle was created with method pixelate");
        const int size = a.crop_size();
        std::vector<cv::Mat> crops{cv::Mat(size, size, CV_8UC3, const_cast<uint8_t *>(crop_bgr))}, faces;
        std::vector<float> wp, st;
        a.latent()->generate(crops, {seed}, faces, w_plus ? &wp : nullptr, styles ? &st : nullptr);
        if (w_plus) std::memcpy(w_plus, wp.data(), wp.size() * sizeof(float));
        if (styles) std::memcpy(styles, st.data(), st.size() * sizeof(float));
        if (face) {
            cv::Mat dst(size, size, CV_8UC3, face);
            faces[0].copyTo(dst);
        }
    });
}

styleid_edge_status styleid_edge_seed_z(uint64_t seed, float *z, size_t dim) {
    return guarded("styleid_edge_seed_z", [&] {
        if (!z) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "z is NULL");
        styleid::seed_z(seed, z, dim);
    });
}

styleid_edge_status styleid_edge_track_seed(uint64_t run_seed, int64_t track_id, uint64_t *seed) {
    return guarded("styleid_edge_track_seed", [&] {
        if (!seed) throw styleid::Error(STYLEID_EDGE_ERR_ARGUMENT, "seed is NULL");
        *seed = styleid::track_seed(run_seed, track_id);
    });
}

}  // extern "C"
