/*
 * styleid_edge.h - C API of libstyleid_edge, the native appliance runtime of styleid-edge.
 *
 * It reads the same model packs as the Python runtime (manifest.json + ONNX files) and runs
 * the same per-frame pipeline for the latent method: detect (YuNet) -> track (ids, One Euro
 * smoothing, hold-over) -> FFHQ align -> encode (W+) -> StyleSpace channel swap toward a
 * per-track pseudo-identity -> synthesis -> paste back; any face that cannot be regenerated
 * is pixelated (fail closed). Inference runs on OpenVINO, image operations on OpenCV.
 *
 * Conventions: images are 8-bit BGR, interleaved, rows `stride` bytes apart (stride 0 means
 * width * 3). Every function returns a styleid_edge_status; on failure
 * styleid_edge_last_error() (per thread) says what went wrong, naming the file and the fix.
 *
 * Threads: a handle, reader or writer may be used from one thread at a time (any thread, not only the
 * one that made it); separate objects are independent and may run in parallel. styleid_edge_destroy
 * and styleid_edge_reader_close accept NULL; styleid_edge_writer_close(NULL) returns ERR_ARGUMENT.
 *
 * Compatibility: STYLEID_EDGE_VERSION_* below are the header's version, styleid_edge_version() the
 * library's. Before 1.0 the ABI may change with the minor version (struct layouts included:
 * styleid_edge_face grows at its end); build against the header of the library you load, and check
 * that styleid_edge_version() starts with the same "MAJOR.MINOR." as STYLEID_EDGE_VERSION.
 */
#ifndef STYLEID_EDGE_H
#define STYLEID_EDGE_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(STYLEID_EDGE_BUILDING)
#    define STYLEID_EDGE_API __declspec(dllexport)
#  else
#    define STYLEID_EDGE_API __declspec(dllimport)
#  endif
#else
#  define STYLEID_EDGE_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define STYLEID_EDGE_VERSION_MAJOR 0
#define STYLEID_EDGE_VERSION_MINOR 1
#define STYLEID_EDGE_VERSION_PATCH 0
#define STYLEID_EDGE_VERSION "0.1.0"

typedef enum styleid_edge_status {
    STYLEID_EDGE_OK = 0,
    STYLEID_EDGE_ERR_ARGUMENT = 1,   /* a NULL pointer, bad size or bad option value */
    STYLEID_EDGE_ERR_PACK = 2,       /* pack directory, manifest or rank file missing or invalid */
    STYLEID_EDGE_ERR_MODEL = 3,      /* an ONNX file is missing, unreadable or has the wrong inputs/outputs */
    STYLEID_EDGE_ERR_INFERENCE = 4,  /* OpenVINO failed while running a model */
    STYLEID_EDGE_ERR_IO = 5,         /* a video/image could not be read or written (CLI, helpers) */
    STYLEID_EDGE_ERR_BUFFER = 6,     /* an output array is too small; the count needed is still returned */
    STYLEID_EDGE_ERR_INTERNAL = 7    /* anything else (a bug: please report it with the message) */
} styleid_edge_status;

typedef enum styleid_edge_method {
    STYLEID_EDGE_METHOD_LATENT = 0,   /* StyleSpace channel swap (needs encoder, mapping, affine, synthesis) */
    STYLEID_EDGE_METHOD_PIXELATE = 1  /* mosaic every face (no generative models are loaded) */
} styleid_edge_method;

typedef enum styleid_edge_fallback {
    STYLEID_EDGE_FALLBACK_NONE = 0,
    STYLEID_EDGE_FALLBACK_TOO_SMALL = 1,     /* box smaller than min_face */
    STYLEID_EDGE_FALLBACK_NO_LANDMARKS = 2,
    STYLEID_EDGE_FALLBACK_PROFILE = 3,       /* |yaw proxy| > max_yaw */
    STYLEID_EDGE_FALLBACK_ALIGN_ERROR = 4,
    STYLEID_EDGE_FALLBACK_MODEL_ERROR = 5,   /* inference failed: the face was pixelated */
    STYLEID_EDGE_FALLBACK_PASTE_ERROR = 6
} styleid_edge_fallback;

/* Options for styleid_edge_create. Always fill with styleid_edge_options_init first. */
typedef struct styleid_edge_options {
    uint32_t struct_size;        /* sizeof(styleid_edge_options); set by styleid_edge_options_init */
    int method;                  /* styleid_edge_method; default LATENT */
    const char *detector_path;   /* fp32 YuNet ONNX; NULL: <pack>/detector.onnx */
    const char *device;          /* OpenVINO device ("CPU", "GPU", ...), or "TensorRT" / "TensorRT:N" (GPU N:
                                    the generative models on TensorRT engines, the detector on OpenVINO CPU;
                                    needs a library built with TensorRT); NULL: "CPU" */
    int num_threads;             /* OpenVINO inference threads; 0: OpenVINO's default */
    float strength;              /* (0, 1]; <= 0: the pack's calibrated default, else 0.5 */
    float truncation;            /* pseudo-identity truncation psi; default 0.7 */
    uint64_t seed;               /* run seed: track pseudo-identity seeds derive from it; default 0 */
    int use_groups;              /* 1: rank 256-channel groups (ranks.groups) instead of channels */
    float detector_threshold;    /* YuNet score threshold; default 0.5 */
    int detector_rotations;      /* 1: extra passes at -30/+30 degrees (the Python default); 0: off */
    int min_face;                /* faces whose box is smaller (px) are pixelated; default 24 */
    float max_yaw;               /* profile limit on the landmark yaw proxy; default 0.8 */
    int hold_frames;             /* tracker hold-over after a missed detection; default 5 */
    float fps;                   /* stream frame rate for landmark smoothing; default 30 */
    int batch_size;              /* faces per encoder/generator call; default 16 */
    float weak_threshold;        /* faces scoring from this up to detector_threshold only continue a track,
                                    never start one; default 0.3; 0: off */
    const char *engine_dir;      /* device TensorRT: the engine cache `styleid-edge export tensorrt` wrote;
                                    NULL: $STYLEID_EDGE_TRT_CACHE, else ~/.cache/styleid-edge/tensorrt */
} styleid_edge_options;

/* One face of the last processed frame. */
typedef struct styleid_edge_face {
    int64_t track_id;
    float box[4];          /* x1, y1, x2, y2 in frame pixels */
    float landmarks[10];   /* 5 (x, y): eyes, nose, mouth corners (smoothed; NaN when absent) */
    float score;           /* detector score of the last detection */
    int32_t held;          /* 1: output of tracker hold-over (no detection this frame) */
    int32_t method;        /* styleid_edge_method applied to this face */
    int32_t fallback;      /* styleid_edge_fallback: why it was pixelated instead */
    uint64_t seed;         /* the track's pseudo-identity seed */
    int32_t weak;          /* 1: this frame's detection scored below detector_threshold (a continued track) */
} styleid_edge_face;

/* Sizes of the loaded pack (for callers that use the stage functions below). */
typedef struct styleid_edge_info {
    int32_t resolution;    /* generator output size R */
    int32_t n_latent;      /* W+ rows */
    int32_t style_dim;     /* W width (512) */
    int32_t n_styles;      /* StyleSpace channels S */
    int32_t crop_size;     /* aligned crop side (256 for packs up to 256 px) */
    int32_t encoder_size;  /* encoder input side */
    int32_t n_swapped;     /* channels the latent method takes from the target */
    int32_t synthetic;     /* 1: the pack was made from random weights */
    int32_t ranks_calibrated; /* 1: the latent method swaps by the pack's calibrated identity ranks; 0: by a
                                 structural prior (run `styleid-edge calibrate ranks`), or no latent method */
} styleid_edge_info;

typedef struct styleid_edge styleid_edge;

STYLEID_EDGE_API const char *styleid_edge_version(void);
STYLEID_EDGE_API void styleid_edge_options_init(styleid_edge_options *options);

/* Load a pack and the detector. options may be NULL (defaults). *out is NULL on failure. */
STYLEID_EDGE_API styleid_edge_status styleid_edge_create(const char *pack_dir, const styleid_edge_options *options,
                                                         styleid_edge **out);
STYLEID_EDGE_API void styleid_edge_destroy(styleid_edge *handle);

/* Anonymize one frame in place (frames of one stream, in order). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_anonymize(styleid_edge *handle, uint8_t *bgr, int width,
                                                            int height, size_t stride);
/* Same, writing into `out` (same size; `in` is not modified). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_anonymize_into(styleid_edge *handle, const uint8_t *in,
                                                                 int width, int height, size_t in_stride,
                                                                 uint8_t *out, size_t out_stride);
/* The faces of the last anonymized frame: copies min(capacity, n) records, *count = n.
 * Returns STYLEID_EDGE_ERR_BUFFER when capacity < n (faces may be NULL with capacity 0). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_get_faces(const styleid_edge *handle, styleid_edge_face *faces,
                                                            size_t capacity, size_t *count);
/* Start a new stream: forget tracks; frame rate for smoothing (<= 0 keeps the current one). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_reset(styleid_edge *handle, float fps);
STYLEID_EDGE_API styleid_edge_status styleid_edge_get_info(const styleid_edge *handle, styleid_edge_info *info);
/* What runs each model, e.g. "detector: OpenVINO CPU; encoder: TensorRT 10.3.0 on Orin (sm_87), FP16 engine; ...".
 * Owned by the handle; "" for NULL. */
STYLEID_EDGE_API const char *styleid_edge_describe(const styleid_edge *handle);

/* The message of the last failed call on this thread ("" if none). The next call of this API on this thread
 * may clear or replace it: copy it before making one. */
STYLEID_EDGE_API const char *styleid_edge_last_error(void);

/* ---- stage functions: diagnostics and parity tests ------------------------------------- */

/* Detection only (the robust multi-pass YuNet): strong faces best score first, then weak ones (weak = 1,
 * when options.weak_threshold is set); same count contract as get_faces (track_id = -1, held = 0). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_detect(styleid_edge *handle, const uint8_t *bgr, int width,
                                                         int height, size_t stride, styleid_edge_face *faces,
                                                         size_t capacity, size_t *count);
/* FFHQ-aligned crop (crop_size^2 BGR) from 5 landmarks; matrix_out (6 doubles, may be NULL) maps frame -> crop. */
STYLEID_EDGE_API styleid_edge_status styleid_edge_align(styleid_edge *handle, const uint8_t *bgr, int width,
                                                        int height, size_t stride, const float landmarks[10],
                                                        uint8_t *crop_out, double matrix_out[6]);
/* The latent method on one aligned crop (crop_size^2 BGR) toward pseudo-identity `seed`.
 * Any output may be NULL: w_plus (n_latent*style_dim), styles (n_styles, after the swap),
 * face (crop_size^2 BGR, the generated face resized to the crop). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_generate(styleid_edge *handle, const uint8_t *crop_bgr,
                                                           uint64_t seed, float *w_plus, float *styles,
                                                           uint8_t *face);
/* The pseudo-identity latent z (512 floats) of a seed: SplitMix64 + Box-Muller (see README). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_seed_z(uint64_t seed, float *z, size_t dim);
/* A track's pseudo-identity seed: BLAKE2b-64 of "styleid-edge/track/<run_seed>/<track_id>" (as Python). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_track_seed(uint64_t run_seed, int64_t track_id, uint64_t *seed);

/* ---- video helpers (OpenCV videoio underneath), so C programs need no other video library ---- */

typedef struct styleid_edge_reader styleid_edge_reader;
typedef struct styleid_edge_writer styleid_edge_writer;

/* Open a video file, an image, a network stream (rtsp://, http://, udp://, srt://: FFmpeg), or a
 * camera ("0" or "/dev/video0": V4L2). width/height/fps may be NULL. Same as
 * styleid_edge_reader_open_with(uri, NULL, ...). */
STYLEID_EDGE_API styleid_edge_status styleid_edge_reader_open(const char *uri, styleid_edge_reader **out, int *width,
                                                              int *height, double *fps);

/* How a stream is opened. Initialise with styleid_edge_reader_options_init (all defaults). */
typedef struct styleid_edge_reader_options {
    /* FFmpeg demuxer options in OpenCV's form "key;value|key;value", e.g. "rtsp_transport;tcp" or
     * "rtsp_flags;listen" (wait for an encoder/camera to push RTSP to this URL). NULL: none.
     * OpenCV reads them from the OPENCV_FFMPEG_CAPTURE_OPTIONS environment variable, so the call sets
     * that variable while it opens (under a lock) and restores it; other threads that read the
     * environment at that moment may see it. */
    const char *ffmpeg_options;
    int open_timeout_ms;  /* give up opening after this long (0: OpenCV's default, 30 s) */
    int read_timeout_ms;  /* a stream with no frame for this long has ended (0: OpenCV's default, 30 s) */
} styleid_edge_reader_options;

STYLEID_EDGE_API void styleid_edge_reader_options_init(styleid_edge_reader_options *options);
STYLEID_EDGE_API styleid_edge_status styleid_edge_reader_open_with(const char *uri,
                                                                   const styleid_edge_reader_options *options,
                                                                   styleid_edge_reader **out, int *width,
                                                                   int *height, double *fps);
/* Next frame into bgr (width*height*3 at the given stride); *got = 0 at the end of the stream. */
STYLEID_EDGE_API styleid_edge_status styleid_edge_reader_read(styleid_edge_reader *reader, uint8_t *bgr, size_t stride,
                                                              int *got);
/* Frames an .avi/.mp4/.mov/.m4v file's container records, 1 for an image, -1 when unknown (streams, cameras,
 * containers that only estimate it from their duration, such as .mkv and .ts). Compare with the frames
 * read to notice a file that ends early (cut off). */
STYLEID_EDGE_API int64_t styleid_edge_reader_frame_count(const styleid_edge_reader *reader);
STYLEID_EDGE_API void styleid_edge_reader_close(styleid_edge_reader *reader);
/* Create a video file (codec from the suffix: .mp4/.mkv -> H.264 when OpenCV's FFmpeg can encode it, else
 * mp4v/XVID; .avi -> MJPG). An odd width/height is written one pixel larger (last column/row repeated):
 * the encoders need even sizes, and no pixel of the frame is dropped. */
STYLEID_EDGE_API styleid_edge_status styleid_edge_writer_open(const char *path, int width, int height, double fps,
                                                              styleid_edge_writer **out);
STYLEID_EDGE_API styleid_edge_status styleid_edge_writer_write(styleid_edge_writer *writer, const uint8_t *bgr,
                                                               size_t stride);
/* Finish the file; returns an error if it could not be completed: a video file is read back, and fewer
 * frames than were written (a full disk) is an error. The writer is freed either way. */
STYLEID_EDGE_API styleid_edge_status styleid_edge_writer_close(styleid_edge_writer *writer);

#ifdef __cplusplus
}
#endif
#endif /* STYLEID_EDGE_H */
