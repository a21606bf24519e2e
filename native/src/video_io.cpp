// video_io.cpp - the C API's video helpers on OpenCV videoio (FFmpeg backend on Debian).
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>

#include "styleid_edge.h"

// last-error plumbing shared with c_api.cpp
namespace styleid {
styleid_edge_status set_error(styleid_edge_status status, const std::string &message);
void clear_error();
}  // namespace styleid

struct styleid_edge_reader {
    cv::VideoCapture capture;
    cv::Mat image;  // a still image input: one frame
    bool is_image = false;
    cv::Mat frame;
    int width = 0, height = 0;
    int rotate_code = -1;  // cv::RotateFlags applied to each frame (OpenCV 4.6's auto-rotation replaced), -1: none
    cv::Mat upright;
    std::string uri;
};

struct styleid_edge_writer {
    cv::VideoWriter writer;
    bool is_image = false;  // a still image output: each write replaces the file
    int width = 0, height = 0;
    cv::Mat padded;  // odd sizes: the frame with its last column/row repeated (the encoders need even sizes)
    std::string path;
    long frames = 0;  // video frames handed to the encoder (checked against the finished file)
};

namespace {

bool is_camera_index(const std::string &s) {
    if (s.empty() || s.size() > 3) return false;
    for (char c : s)
        if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    return true;
}

std::string suffix(const std::string &path) {
    size_t dot = path.find_last_of('.');
    std::string s = dot == std::string::npos ? "" : path.substr(dot);
    for (auto &c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

bool image_suffix(const std::string &path) {
    std::string s = suffix(path);
    return s == ".jpg" || s == ".jpeg" || s == ".png" || s == ".bmp";
}

bool is_device_path(const std::string &s) { return s.rfind("/dev/video", 0) == 0; }

bool is_url(const std::string &s) { return s.find("://") != std::string::npos; }

bool file_exists(const std::string &path) {
    std::error_code ec;
    return std::filesystem::exists(path, ec);
}

// OpenCV's FFmpeg backend takes demuxer options only from OPENCV_FFMPEG_CAPTURE_OPTIONS, read when a
// capture opens: set it for this open, then put back what was there.
class ScopedCaptureOptions {
public:
    // Every FFmpeg open takes the lock, with options or without: an open without options must not read
    // another thread's options while they are set.
    explicit ScopedCaptureOptions(const char *options) : active_(options && *options), lock_(mutex()) {
        if (!active_) return;
        const char *old = std::getenv(kName);
        had_old_ = old != nullptr;
        if (had_old_) old_ = old;
        setenv(kName, options, 1);
    }
    ~ScopedCaptureOptions() {
        if (!active_) return;
        if (had_old_) setenv(kName, old_.c_str(), 1);
        else unsetenv(kName);
    }
    ScopedCaptureOptions(const ScopedCaptureOptions &) = delete;
    ScopedCaptureOptions &operator=(const ScopedCaptureOptions &) = delete;

private:
    static std::mutex &mutex() {
        static std::mutex m;
        return m;
    }
    static constexpr const char *kName = "OPENCV_FFMPEG_CAPTURE_OPTIONS";
    bool active_, had_old_ = false;
    std::string old_;
    std::unique_lock<std::mutex> lock_;
};

// OpenCV 4.6.x reads a stream's display rotation with the wrong sign (opencv/opencv#22088: a phone clip tagged
// 90 reports 270), so its auto-rotation turns portrait clips upside down. There: take the stored frames, flip the
// reported angle and rotate here, the way players (and the Python runtime, through PyAV) show the clip. Other
// OpenCV versions rotate correctly on their own (CAP_PROP_ORIENTATION_AUTO, on by default for FFmpeg).
void fix_orientation(styleid_edge_reader &r) {
#if CV_VERSION_MAJOR == 4 && CV_VERSION_MINOR == 6
    const int reported = static_cast<int>(std::lround(r.capture.get(cv::CAP_PROP_ORIENTATION_META)));
    const int angle = ((360 - reported) % 360 + 360) % 360;  // clockwise degrees, as OpenCV 4.5 / 4.7+ report
    if (angle == 0 || !r.capture.set(cv::CAP_PROP_ORIENTATION_AUTO, 0)) return;
    r.width = static_cast<int>(r.capture.get(cv::CAP_PROP_FRAME_WIDTH));  // the stored size now
    r.height = static_cast<int>(r.capture.get(cv::CAP_PROP_FRAME_HEIGHT));
    if (angle == 90) r.rotate_code = cv::ROTATE_90_CLOCKWISE;
    else if (angle == 180) r.rotate_code = cv::ROTATE_180;
    else if (angle == 270) r.rotate_code = cv::ROTATE_90_COUNTERCLOCKWISE;
    if (angle == 90 || angle == 270) std::swap(r.width, r.height);
#else
    (void)r;
#endif
}

bool open_capture(cv::VideoCapture &capture, const std::string &uri, const styleid_edge_reader_options &o) {
    std::vector<int> params;
    if (o.open_timeout_ms > 0) params.insert(params.end(), {cv::CAP_PROP_OPEN_TIMEOUT_MSEC, o.open_timeout_ms});
    if (o.read_timeout_ms > 0) params.insert(params.end(), {cv::CAP_PROP_READ_TIMEOUT_MSEC, o.read_timeout_ms});
#ifdef __linux__
    // V4L2 directly (not whatever backend CAP_ANY picks, e.g. GStreamer on JetPack): its reads time out
    if (is_camera_index(uri)) return capture.open(std::stoi(uri), cv::CAP_V4L2);
#else
    if (is_camera_index(uri)) return capture.open(std::stoi(uri), cv::CAP_ANY);
#endif
    if (is_device_path(uri)) return capture.open(uri, cv::CAP_V4L2);
    ScopedCaptureOptions scoped(o.ffmpeg_options);
    return capture.open(uri, cv::CAP_FFMPEG, params);
}

}  // namespace

extern "C" {

void styleid_edge_reader_options_init(styleid_edge_reader_options *options) {
    if (!options) return;
    options->ffmpeg_options = nullptr;
    options->open_timeout_ms = 0;
    options->read_timeout_ms = 0;
}

styleid_edge_status styleid_edge_reader_open(const char *uri, styleid_edge_reader **out, int *width, int *height,
                                             double *fps) {
    return styleid_edge_reader_open_with(uri, nullptr, out, width, height, fps);
}

styleid_edge_status styleid_edge_reader_open_with(const char *uri, const styleid_edge_reader_options *options,
                                                  styleid_edge_reader **out, int *width, int *height, double *fps) {
    using styleid::set_error;
    if (out) *out = nullptr;
    if (!uri || !out) return set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_reader_open: uri or out is NULL");
    styleid_edge_reader_options opts;
    styleid_edge_reader_options_init(&opts);
    if (options) opts = *options;
    if (opts.open_timeout_ms < 0 || opts.read_timeout_ms < 0)
        return set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_reader_open: timeouts must be >= 0 ms");
    try {
        styleid::clear_error();
        auto r = new styleid_edge_reader;
        r->uri = uri;
        if (!is_url(r->uri) && image_suffix(r->uri)) {
            r->image = cv::imread(r->uri, cv::IMREAD_COLOR);
            if (r->image.empty()) {
                delete r;
                return set_error(STYLEID_EDGE_ERR_IO, std::string("styleid_edge_reader_open: ") + uri +
                                                          ": cannot read this image (missing or corrupt)");
            }
            r->is_image = true;
            r->width = r->image.cols;
            r->height = r->image.rows;
            if (width) *width = r->width;
            if (height) *height = r->height;
            if (fps) *fps = 1.0;
            *out = r;
            return STYLEID_EDGE_OK;
        }
        if (!is_url(r->uri) && !is_camera_index(r->uri) && !is_device_path(r->uri) && !file_exists(r->uri)) {
            delete r;
            return set_error(STYLEID_EDGE_ERR_IO, std::string("styleid_edge_reader_open: ") + uri +
                                                      ": no such file (check the path)");
        }
        bool ok = open_capture(r->capture, r->uri, opts);
        if (!ok || !r->capture.isOpened()) {
            std::string why;
            if (is_camera_index(r->uri) || is_device_path(r->uri))
                why = ": cannot open this camera (is it connected, is /dev/video* readable by this user, is it "
                      "in use by another program?)";
            else if (is_url(r->uri))
                why = ": cannot open this stream (unreachable, wrong path or credentials, nothing sent within "
                      "the open timeout, or OpenCV built without FFmpeg; for RTSP over a firewall try TCP: "
                      "ffmpeg_options \"rtsp_transport;tcp\", styleid-edge-rt --rtsp-transport tcp)";
            else
                why = ": cannot open (missing file, unsupported codec, or OpenCV built without FFmpeg?)";
            delete r;
            return set_error(STYLEID_EDGE_ERR_IO, std::string("styleid_edge_reader_open: ") + uri + why);
        }
        r->width = static_cast<int>(r->capture.get(cv::CAP_PROP_FRAME_WIDTH));
        r->height = static_cast<int>(r->capture.get(cv::CAP_PROP_FRAME_HEIGHT));
        fix_orientation(*r);
        if (width) *width = r->width;
        if (height) *height = r->height;
        if (fps) {
            double f = r->capture.get(cv::CAP_PROP_FPS);
            *fps = f > 0 && f < 1000 ? f : 30.0;
        }
        *out = r;
        return STYLEID_EDGE_OK;
    } catch (const std::exception &e) {
        return set_error(STYLEID_EDGE_ERR_IO, std::string("styleid_edge_reader_open: ") + uri + ": " + e.what());
    }
}

styleid_edge_status styleid_edge_reader_read(styleid_edge_reader *r, uint8_t *bgr, size_t stride, int *got) {
    using styleid::set_error;
    if (got) *got = 0;
    if (!r || !bgr || !got) return set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_reader_read: NULL argument");
    try {
        styleid::clear_error();
        if (r->is_image) {
            if (r->image.empty()) return STYLEID_EDGE_OK;  // the one frame was read
            r->frame = r->image;
            r->image = cv::Mat();
        } else if (!r->capture.read(r->frame) || r->frame.empty()) {
            return STYLEID_EDGE_OK;  // end of stream
        } else if (r->rotate_code >= 0) {
            cv::rotate(r->frame, r->upright, r->rotate_code);
            std::swap(r->frame, r->upright);
        }
        if (r->frame.cols != r->width || r->frame.rows != r->height || r->frame.type() != CV_8UC3)
            return set_error(STYLEID_EDGE_ERR_IO, r->uri + ": frame size or format changed mid-stream");
        cv::Mat dst(r->height, r->width, CV_8UC3, bgr, stride ? stride : static_cast<size_t>(cv::Mat::AUTO_STEP));
        r->frame.copyTo(dst);
        *got = 1;
        return STYLEID_EDGE_OK;
    } catch (const std::exception &e) {
        return set_error(STYLEID_EDGE_ERR_IO, r->uri + ": read failed: " + e.what());
    }
}

int64_t styleid_edge_reader_frame_count(const styleid_edge_reader *r) {
    if (!r) return -1;
    if (r->is_image) return 1;
    if (is_url(r->uri) || is_camera_index(r->uri) || is_device_path(r->uri)) return -1;
    // only containers that record their frame count: for the others (mkv, ts, ...) OpenCV estimates it from
    // the duration, which a variable frame rate or a longer audio track throws off
    const std::string sfx = suffix(r->uri);
    if (sfx != ".avi" && sfx != ".mp4" && sfx != ".mov" && sfx != ".m4v") return -1;
    const double n = r->capture.get(cv::CAP_PROP_FRAME_COUNT);
    return n > 0 && n < 1e12 ? static_cast<int64_t>(n) : -1;
}

void styleid_edge_reader_close(styleid_edge_reader *r) { delete r; }

styleid_edge_status styleid_edge_writer_open(const char *path, int width, int height, double fps,
                                             styleid_edge_writer **out) {
    using styleid::set_error;
    if (out) *out = nullptr;
    if (!path || !out || width <= 0 || height <= 0 || !(fps > 0))
        return set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_writer_open: bad arguments");
    try {
        styleid::clear_error();
        std::string sfx = suffix(path);
        if (image_suffix(path)) {
            auto w = new styleid_edge_writer;
            w->path = path;
            w->width = width;
            w->height = height;
            w->is_image = true;
            *out = w;
            return STYLEID_EDGE_OK;
        }
        // .mp4/.mkv: H.264 (smaller, plays everywhere) when OpenCV's FFmpeg has an encoder for it, else MPEG-4
        // part 2; .avi: Motion JPEG. Every encoder here needs an even size (OpenCV would silently drop an odd
        // last row/column): odd frames are written one pixel larger, the last row/column repeated.
        std::vector<int> codecs;
        if (sfx == ".avi") codecs = {cv::VideoWriter::fourcc('M', 'J', 'P', 'G')};
        else codecs = {cv::VideoWriter::fourcc('a', 'v', 'c', '1')};
        if (sfx == ".mkv") codecs.push_back(cv::VideoWriter::fourcc('X', 'V', 'I', 'D'));
        else if (sfx != ".avi") codecs.push_back(cv::VideoWriter::fourcc('m', 'p', '4', 'v'));
        auto w = new styleid_edge_writer;
        w->path = path;
        w->width = width;
        w->height = height;
        bool opened = false;
        const cv::Size coded(width + width % 2, height + height % 2);
        if (coded.width != width || coded.height != height) w->padded.create(coded, CV_8UC3);
        for (int fourcc : codecs) {
            opened = w->writer.open(path, cv::CAP_FFMPEG, fourcc, fps, coded, true) &&
                     w->writer.isOpened();
            if (opened) break;
        }
        if (!opened) {
            delete w;
            return set_error(STYLEID_EDGE_ERR_IO, std::string("styleid_edge_writer_open: ") + path +
                                                      ": cannot create (directory missing or not writable, or no "
                                                      "encoder for this suffix; try .mp4 or .avi)");
        }
        *out = w;
        return STYLEID_EDGE_OK;
    } catch (const std::exception &e) {
        return set_error(STYLEID_EDGE_ERR_IO, std::string("styleid_edge_writer_open: ") + path + ": " + e.what());
    }
}

styleid_edge_status styleid_edge_writer_write(styleid_edge_writer *w, const uint8_t *bgr, size_t stride) {
    using styleid::set_error;
    if (!w || !bgr) return set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_writer_write: NULL argument");
    try {
        styleid::clear_error();
        cv::Mat frame(w->height, w->width, CV_8UC3, const_cast<uint8_t *>(bgr), stride ? stride : static_cast<size_t>(cv::Mat::AUTO_STEP));
        if (w->is_image) {
            if (!cv::imwrite(w->path, frame))
                return set_error(STYLEID_EDGE_ERR_IO, w->path + ": cannot write this image (directory missing?)");
            return STYLEID_EDGE_OK;
        }
        if (!w->padded.empty()) {  // preallocated: copyMakeBorder writes into it without allocating
            cv::copyMakeBorder(frame, w->padded, 0, w->padded.rows - frame.rows, 0, w->padded.cols - frame.cols,
                               cv::BORDER_REPLICATE);
            w->writer.write(w->padded);
        } else {
            w->writer.write(frame);
        }
        ++w->frames;
        return STYLEID_EDGE_OK;
    } catch (const std::exception &e) {
        return set_error(STYLEID_EDGE_ERR_IO, w->path + ": write failed: " + e.what());
    }
}

styleid_edge_status styleid_edge_writer_close(styleid_edge_writer *w) {
    if (!w) return styleid::set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_writer_close: NULL writer");
    std::string problem;
    try {
        w->writer.release();
        // cv::VideoWriter reports no write error (a full disk included): read the finished file back
        if (!w->is_image && w->frames > 0) {
            cv::VideoCapture check(w->path, cv::CAP_FFMPEG);
            const double n = check.isOpened() ? check.get(cv::CAP_PROP_FRAME_COUNT) : -1;
            if (!check.isOpened())
                problem = "the finished file cannot be read back";
            else if (n >= 0 && n < static_cast<double>(w->frames))
                problem = "only " + std::to_string(static_cast<long>(n)) + " of the " + std::to_string(w->frames) +
                          " frames written can be read back";
            if (!problem.empty()) problem += " (disk full, or the folder not writable?)";
        }
    } catch (const std::exception &e) {
        problem = e.what();
    }
    std::string msg = w->path + ": could not finish the file: " + problem;
    delete w;
    if (!problem.empty()) return styleid::set_error(STYLEID_EDGE_ERR_IO, msg);
    return STYLEID_EDGE_OK;
}

}  // extern "C"
