// video_io.cpp - the C API's video helpers on OpenCV videoio (FFmpeg backend on Debian).
#include <cctype>
#include <cstring>
#include <string>

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
    std::string uri;
};

struct styleid_edge_writer {
    cv::VideoWriter writer;
    bool is_image = false;  // a still image output: each write replaces the file
    int width = 0, height = 0;
    std::string path;
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

}  // namespace

extern "C" {

styleid_edge_status styleid_edge_reader_open(const char *uri, styleid_edge_reader **out, int *width, int *height,
                                             double *fps) {
    using styleid::set_error;
    if (out) *out = nullptr;
    if (!uri || !out) return set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_reader_open: uri or out is NULL");
    try {
        styleid::clear_error();
        auto r = new styleid_edge_reader;
        r->uri = uri;
        if (image_suffix(r->uri)) {
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
        bool ok = is_camera_index(r->uri) ? r->capture.open(std::stoi(r->uri)) : r->capture.open(r->uri, cv::CAP_FFMPEG);
        if (!ok || !r->capture.isOpened()) {
            delete r;
            return set_error(STYLEID_EDGE_ERR_IO, std::string("styleid_edge_reader_open: ") + uri +
                                                      ": cannot open (missing file, unsupported codec, or "
                                                      "unreachable stream; is OpenCV built with FFmpeg?)");
        }
        r->width = static_cast<int>(r->capture.get(cv::CAP_PROP_FRAME_WIDTH));
        r->height = static_cast<int>(r->capture.get(cv::CAP_PROP_FRAME_HEIGHT));
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
        int fourcc = sfx == ".avi" ? cv::VideoWriter::fourcc('M', 'J', 'P', 'G')
                     : sfx == ".mkv" ? cv::VideoWriter::fourcc('X', 'V', 'I', 'D')
                                     : cv::VideoWriter::fourcc('m', 'p', '4', 'v');
        auto w = new styleid_edge_writer;
        w->path = path;
        w->width = width;
        w->height = height;
        if (!w->writer.open(path, cv::CAP_FFMPEG, fourcc, fps, cv::Size(width, height), true) || !w->writer.isOpened()) {
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
        w->writer.write(frame);
        return STYLEID_EDGE_OK;
    } catch (const std::exception &e) {
        return set_error(STYLEID_EDGE_ERR_IO, w->path + ": write failed: " + e.what());
    }
}

styleid_edge_status styleid_edge_writer_close(styleid_edge_writer *w) {
    if (!w) return styleid::set_error(STYLEID_EDGE_ERR_ARGUMENT, "styleid_edge_writer_close: NULL writer");
    try {
        w->writer.release();
    } catch (const std::exception &e) {
        std::string msg = w->path + ": could not finish the file: " + e.what();
        delete w;
        return styleid::set_error(STYLEID_EDGE_ERR_IO, msg);
    }
    delete w;
    return STYLEID_EDGE_OK;
}

}  // extern "C"
