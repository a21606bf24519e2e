// styleid-edge-rt - the native runtime's command line: image, video file, RTSP URL or camera in;
// image or video file out. Flags follow `styleid-edge anonymize` where they apply.
//
// Three threads: decode | anonymize (this thread) | encode, joined by bounded queues over a fixed pool
// of frame buffers, so memory stays flat and nothing is allocated per frame once the pool is full.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "styleid_edge.h"

namespace {

namespace fs = std::filesystem;

const char *kUsage =
    "usage: styleid-edge-rt INPUT -o OUTPUT [options]\n"
    "  INPUT            image (.jpg/.png/.bmp), video file, stream URL (rtsp://, http://, udp://, srt://)\n"
    "                   or camera (0, /dev/video0). Ctrl-C ends a stream cleanly: the output is finished\n"
    "  -o, --output     output image or video file (.mp4, .avi, .mkv)\n"
    "  --pack DIR       model pack directory (default: $STYLEID_EDGE_PACK)\n"
    "  --method M       latent (default) or pixelate\n"
    "  --strength F     privacy knob in (0,1]: share of identity channels swapped (default: pack's, else 0.5)\n"
    "  --seed N         seed of the pseudo-identities (one per tracked person), default 0\n"
    "  --detector PATH  fp32 YuNet ONNX (default: PACK/detector.onnx)\n"
    "  --thresh F       detection score threshold (default 0.5)\n"
    "  --weak-thresh F  faces scoring from this up to --thresh only continue a tracked face (default 0.3; 0 off)\n"
    "  --min-face N     faces smaller than this (px) are pixelated (default 24)\n"
    "  --report FILE    write a JSON report (frames, faces, methods, fallbacks, seconds)\n"
    "  --threads N      inference threads (default: OpenVINO's)\n"
    "  --device NAME    OpenVINO device (default CPU), or TensorRT / TensorRT:N for the generative models\n"
    "                   on GPU N (a library built with TensorRT; engines from `styleid-edge export tensorrt`)\n"
    "  --engine-dir DIR TensorRT engine cache (default $STYLEID_EDGE_TRT_CACHE or ~/.cache/styleid-edge/tensorrt)\n"
    "  --max-frames N   stop after N frames (N >= 1; cameras and streams)\n"
    "  --rtsp-transport tcp|udp  RTSP transport (default: FFmpeg's, UDP then TCP)\n"
    "  --rtsp-listen    wait for a camera or encoder to push RTSP to INPUT (rtsp://0.0.0.0:8554/name)\n"
    "  --open-timeout S give up opening a stream after S seconds (default 30; with --rtsp-listen 600)\n"
    "  --read-timeout S a stream with no frame for S seconds has ended (default 30)\n"
    "  -q, --quiet      no progress output\n"
    "exit status: 0 done; 1 failed (a stream that cannot be opened or sends nothing included); 2 bad arguments\n"
    "  or an unreadable input file (nothing written); 3 done with errors (the output was written but may be\n"
    "  incomplete: a cut-off input, a read or write error); 130 (143: SIGTERM) a file input stopped by Ctrl-C\n"
    "  (the output holds the frames done so far; on a stream Ctrl-C is the normal end: 0)\n";

struct Args {
    std::string input, output, pack, method = "latent", detector, report, device, engine_dir;
    float strength = -1.f, thresh = 0.5f, weak_thresh = 0.3f;
    unsigned long long seed = 0;
    int min_face = 24, threads = 0;
    long max_frames = -1;
    bool quiet = false;
    std::string rtsp_transport;
    bool listen = false;
    double open_timeout = 30, read_timeout = 30;
    bool open_timeout_given = false;  // not given: 30 s, 600 s with --rtsp-listen
};

[[noreturn]] void usage_error(const std::string &msg) {
    std::fprintf(stderr, "usage: styleid-edge-rt INPUT -o OUTPUT [options]  (--help lists them)\nstyleid-edge-rt: "
                         "error: %s\n", msg.c_str());
    std::exit(2);
}

// The whole text must be the number ("12abc" and "" are refused).
template <typename T>
T number(const std::string &flag, const std::string &text, T (*conv)(const std::string &, size_t *)) {
    size_t used = 0;
    T v{};
    try {
        v = conv(text, &used);
    } catch (const std::logic_error &) {
        used = 0;
    }
    if (text.empty() || used != text.size()) usage_error("bad value for " + flag + ": '" + text + "' is not a number");
    return v;
}
float to_float(const std::string &s, size_t *n) { return std::stof(s, n); }
double to_double(const std::string &s, size_t *n) { return std::stod(s, n); }
long to_long(const std::string &s, size_t *n) { return std::stol(s, n); }
unsigned long long to_seed(const std::string &s, size_t *n) {
    if (!s.empty() && s[0] == '-') throw std::invalid_argument("negative");  // stoull would wrap -1 to 2^64-1
    return std::stoull(s, n);
}

bool image_path(const std::string &path) {
    std::string s = fs::path(path).extension().string();
    for (auto &c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s == ".jpg" || s == ".jpeg" || s == ".png" || s == ".bmp";
}

// A URL, a camera index or a V4L2 device (the library's rules): not a file that must exist.
bool is_stream(const std::string &input) {
    return input.find("://") != std::string::npos || input.rfind("/dev/video", 0) == 0 ||
           (!input.empty() && input.size() <= 3 && input.find_first_not_of("0123456789") == std::string::npos);
}

// Two paths name the same file: the same inode when both exist, else the same normalised absolute path.
bool same_path(const std::string &x, const std::string &y) {
    std::error_code ec;
    if (fs::exists(x, ec) && fs::exists(y, ec)) return fs::equivalent(x, y, ec);
    return fs::weakly_canonical(fs::absolute(x, ec), ec) == fs::weakly_canonical(fs::absolute(y, ec), ec);
}

Args parse(int argc, char **argv) {
    Args a;
    auto value = [&](int &i) -> std::string {
        if (i + 1 >= argc) usage_error(std::string(argv[i]) + " needs a value");
        return argv[++i];
    };
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        if (k == "-h" || k == "--help") { std::printf("%s", kUsage); std::exit(0); }
        else if (k == "-o" || k == "--output") a.output = value(i);
        else if (k == "--pack") a.pack = value(i);
        else if (k == "--method") a.method = value(i);
        else if (k == "--strength") {
            a.strength = number(k, value(i), to_float);
            if (!(a.strength > 0.f && a.strength <= 1.f)) usage_error("--strength must be in (0, 1]");
        }
        else if (k == "--seed") a.seed = number(k, value(i), to_seed);
        else if (k == "--detector") a.detector = value(i);
        else if (k == "--thresh") a.thresh = number(k, value(i), to_float);
        else if (k == "--weak-thresh") a.weak_thresh = number(k, value(i), to_float);
        else if (k == "--min-face") {
            const long v = number(k, value(i), to_long);
            if (v < 0 || v > 100000) usage_error("--min-face must be >= 0 (pixels, at most 100000)");
            a.min_face = static_cast<int>(v);
        }
        else if (k == "--report") a.report = value(i);
        else if (k == "--threads") {
            const long v = number(k, value(i), to_long);
            if (v < 0 || v > 4096) usage_error("--threads must be >= 0 (0: OpenVINO's default)");
            a.threads = static_cast<int>(v);
        }
        else if (k == "--device") a.device = value(i);
        else if (k == "--engine-dir") a.engine_dir = value(i);
        else if (k == "--max-frames") {
            a.max_frames = number(k, value(i), to_long);
            if (a.max_frames < 1) usage_error("--max-frames must be >= 1");
        }
        else if (k == "--rtsp-transport") a.rtsp_transport = value(i);
        else if (k == "--rtsp-listen") a.listen = true;
        else if (k == "--open-timeout") {
            a.open_timeout = number(k, value(i), to_double);
            a.open_timeout_given = true;
        }
        else if (k == "--read-timeout") a.read_timeout = number(k, value(i), to_double);
        else if (k == "-q" || k == "--quiet") a.quiet = true;
        else if (!k.empty() && k[0] == '-' && k != "-") usage_error("unknown option " + k);
        else if (a.input.empty()) a.input = k;
        else usage_error("unexpected argument " + k);
    }
    if (a.input.empty() || a.output.empty()) usage_error("INPUT and -o OUTPUT are required");
    if (a.pack.empty()) {
        const char *env = std::getenv("STYLEID_EDGE_PACK");
        if (!env || !*env) usage_error("no model pack: pass --pack DIR or set STYLEID_EDGE_PACK");
        a.pack = env;
    }
    if (a.method != "latent" && a.method != "pixelate") usage_error("--method must be latent or pixelate");
    if (!(a.thresh > 0.f && a.thresh <= 1.f)) usage_error("--thresh must be in (0, 1]");
    if (a.thresh > 0.9f)
        std::fprintf(stderr, "styleid-edge-rt: WARNING: --thresh %g is high: faces the detector scores lower stay "
                             "UNCHANGED in the output (sharp frontal faces often score 0.8-0.95)\n", a.thresh);
    if (!(a.weak_thresh >= 0.f && a.weak_thresh <= 1.f)) usage_error("--weak-thresh must be in [0, 1]");
    if (!a.rtsp_transport.empty() && a.rtsp_transport != "tcp" && a.rtsp_transport != "udp")
        usage_error("--rtsp-transport must be tcp or udp");
    const bool rtsp = a.input.rfind("rtsp://", 0) == 0;
    if ((a.listen || !a.rtsp_transport.empty()) && !rtsp)
        usage_error("--rtsp-listen and --rtsp-transport need an rtsp:// INPUT");
    for (double t : {a.open_timeout, a.read_timeout})  // finite: they become int milliseconds
        if (!(t > 0 && t <= 1e6)) usage_error("--open-timeout and --read-timeout must be in (0, 1e6] seconds");
    if (!a.open_timeout_given && a.listen) a.open_timeout = 600;
    std::error_code ec;
    if (!is_stream(a.input) && !fs::exists(a.input, ec)) usage_error(a.input + ": no such file (check the path)");
    if (same_path(a.input, a.output))
        usage_error("output " + a.output + " is the input: choose another output path (the input is never "
                    "overwritten)");
    if (fs::is_directory(a.output, ec))
        usage_error("-o " + a.output + " is a folder; give a file name, e.g. " +
                    (fs::path(a.output) / fs::path(a.input).filename()).string());
    const fs::path out_parent = fs::path(a.output).parent_path();
    const fs::path out_dir = out_parent.empty() ? fs::path(".") : out_parent;
    if (!fs::is_directory(out_dir, ec))
        usage_error("-o " + a.output + ": the folder " + out_dir.string() + " does not exist; create it first");
    if (image_path(a.output) && !image_path(a.input) && a.max_frames != 1)
        usage_error("output " + a.output + " is an image, the input a video or stream: only its last frame would "
                    "be kept; write a video (.mp4, .mkv, .avi), or take one frame with --max-frames 1");
    if (!a.report.empty()) {
        const fs::path report(a.report), folder = report.parent_path().empty() ? fs::path(".") : report.parent_path();
        if (fs::is_directory(report, ec)) usage_error("--report " + a.report + " is a folder; give a file name");
        if (same_path(a.report, a.input) || same_path(a.report, a.output))
            usage_error("--report " + a.report + " is the " + (same_path(a.report, a.input) ? "input" : "output") +
                        ": write the report to a .json file of its own");
        if (!fs::is_directory(folder, ec))
            usage_error("--report " + a.report + ": the folder " + folder.string() + " does not exist");
    }
    const bool device_trt = a.device.rfind("TensorRT", 0) == 0 || a.device.rfind("tensorrt", 0) == 0;
    if (!a.engine_dir.empty() && !device_trt)
        std::fprintf(stderr, "styleid-edge-rt: note: --engine-dir is used only with --device TensorRT\n");
    return a;
}

// A bounded FIFO of buffer indices with a close flag.
class IndexQueue {
public:
    void push(int v) {
        std::lock_guard<std::mutex> lock(m_);
        q_.push_back(v);
        cv_.notify_one();
    }
    bool pop(int &v) {  // false when closed and empty
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return !q_.empty() || closed_; });
        if (q_.empty()) return false;
        v = q_.front();
        q_.pop_front();
        return true;
    }
    void close() {
        std::lock_guard<std::mutex> lock(m_);
        closed_ = true;
        cv_.notify_all();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    std::deque<int> q_;
    bool closed_ = false;
};

// Set by SIGINT/SIGTERM: the decoder stops reading, what was read is anonymized and the output finished. A second
// signal (g_abort) drops the frames read but not yet anonymized (never written) and finishes the output with the
// ones done; a third ends the process at once. The handler only touches lock-free atomics and write(2).
std::atomic<bool> g_signalled{false};
std::atomic<bool> g_abort{false};
std::atomic<int> g_signal{0};

void say_from_handler(const char *msg, size_t len) { (void)!write(STDERR_FILENO, msg, len); }

extern "C" void on_stop_signal(int sig) {
    if (!g_signalled.exchange(true)) {
        g_signal = sig;
        static const char msg[] = "\nstyleid-edge-rt: stopping: anonymizing the frames already read, then finishing "
                                  "the output (Ctrl-C again: finish now without them)\n";
        say_from_handler(msg, sizeof msg - 1);
        return;
    }
    g_abort = true;
    static const char msg[] = "\nstyleid-edge-rt: finishing the output with the frames done so far (Ctrl-C again: "
                              "end at once, leaving an unplayable file)\n";
    say_from_handler(msg, sizeof msg - 1);
    std::signal(sig, SIG_DFL);
}

struct Totals {
    long frames = 0, faces = 0, held = 0;
    std::map<std::string, long> by_method, fallbacks;
};

const char *fallback_name(int f) {
    switch (f) {
        case STYLEID_EDGE_FALLBACK_TOO_SMALL: return "too_small";
        case STYLEID_EDGE_FALLBACK_NO_LANDMARKS: return "no_landmarks";
        case STYLEID_EDGE_FALLBACK_PROFILE: return "profile";
        case STYLEID_EDGE_FALLBACK_ALIGN_ERROR: return "align_error";
        case STYLEID_EDGE_FALLBACK_MODEL_ERROR: return "model_error";
        case STYLEID_EDGE_FALLBACK_PASTE_ERROR: return "paste_error";
        default: return "none";
    }
}

void count_faces(styleid_edge *rt, Totals &t) {
    styleid_edge_face faces[256];
    size_t n = 0;
    styleid_edge_get_faces(rt, faces, 256, &n);
    t.frames += 1;
    for (size_t i = 0; i < n && i < 256; ++i) {
        t.faces += 1;
        t.held += faces[i].held;
        t.by_method[faces[i].method == STYLEID_EDGE_METHOD_LATENT ? "latent" : "pixelate"] += 1;
        if (faces[i].fallback) t.fallbacks[fallback_name(faces[i].fallback)] += 1;
    }
}

std::string json_string(const std::string &text) {
    std::string out = "\"";
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
        else if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof buf, "\\u%04x", c); out += buf; }
        else out += static_cast<char>(c);
    }
    return out + "\"";
}

bool write_report(const Args &a, const Totals &t, double seconds, const std::string &error,
                  const std::vector<std::string> &warnings) {
    if (a.report.empty()) return true;
    std::ofstream out(a.report);
    auto map_json = [](const std::map<std::string, long> &m) {
        std::string s = "{";
        for (const auto &kv : m) s += (s.size() > 1 ? ", " : "") + ("\"" + kv.first + "\": " + std::to_string(kv.second));
        return s + "}";
    };
    out << "{\n  \"runtime\": \"styleid-edge-rt " << styleid_edge_version() << "\",\n"
        << "  \"method\": \"" << a.method << "\",\n  \"frames\": " << t.frames << ",\n  \"faces\": " << t.faces
        << ",\n  \"faces_held\": " << t.held << ",\n  \"by_method\": " << map_json(t.by_method)
        << ",\n  \"fallbacks\": " << map_json(t.fallbacks) << ",\n  \"seconds\": " << seconds
        << ",\n  \"stopped_by_signal\": " << (g_signalled ? "true" : "false")
        << ",\n  \"error\": " << (error.empty() ? "null" : json_string(error)) << ",\n  \"warnings\": [";
    for (size_t i = 0; i < warnings.size(); ++i) out << (i ? ", " : "") << json_string(warnings[i]);
    out << "]\n}\n";
    out.close();
    if (!out) std::fprintf(stderr, "styleid-edge-rt: could not write the report %s\n", a.report.c_str());
    return static_cast<bool>(out);
}

int fail(const std::string &what) {
    std::fprintf(stderr, "styleid-edge-rt: %s: %s\n", what.c_str(), styleid_edge_last_error());
    return 1;
}

}  // namespace

int main(int argc, char **argv) {
    Args a = parse(argc, argv);
    styleid_edge_options opt;
    styleid_edge_options_init(&opt);
    opt.method = a.method == "latent" ? STYLEID_EDGE_METHOD_LATENT : STYLEID_EDGE_METHOD_PIXELATE;
    opt.strength = a.strength;
    opt.seed = a.seed;
    opt.detector_threshold = a.thresh;
    opt.weak_threshold = a.weak_thresh;
    opt.min_face = a.min_face;
    opt.num_threads = a.threads;
    if (!a.detector.empty()) opt.detector_path = a.detector.c_str();
    if (!a.device.empty()) opt.device = a.device.c_str();
    if (!a.engine_dir.empty()) opt.engine_dir = a.engine_dir.c_str();
    const auto start = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };

    styleid_edge *rt = nullptr;
    if (styleid_edge_create(a.pack.c_str(), &opt, &rt) != STYLEID_EDGE_OK) return fail("loading " + a.pack);
    styleid_edge_info info;
    styleid_edge_get_info(rt, &info);
    if (!a.quiet) std::fprintf(stderr, "styleid-edge-rt: %s\n", styleid_edge_describe(rt));
    if (info.n_swapped > 0 && !info.ranks_calibrated && !a.quiet)
        std::fprintf(stderr, "styleid-edge-rt: note: pack %s has no calibrated identity ranks; the latent method uses "
                             "a structural prior (run `styleid-edge calibrate ranks --pack %s` for the calibrated "
                             "ones)\n", a.pack.c_str(), a.pack.c_str());
    if (info.synthetic && !a.quiet)
        std::fprintf(stderr, "styleid-edge-rt: model pack %s is SYNTHETIC (random weights): faces are replaced by "
                             "generated textures, not natural faces\n", a.pack.c_str());

    styleid_edge_reader *reader = nullptr;
    int width = 0, height = 0;
    double fps = 30;
    std::string ffmpeg_options;
    if (!a.rtsp_transport.empty()) ffmpeg_options = "rtsp_transport;" + a.rtsp_transport;
    if (a.listen) ffmpeg_options += std::string(ffmpeg_options.empty() ? "" : "|") + "rtsp_flags;listen";
    styleid_edge_reader_options ropt;
    styleid_edge_reader_options_init(&ropt);
    ropt.ffmpeg_options = ffmpeg_options.empty() ? nullptr : ffmpeg_options.c_str();
    ropt.open_timeout_ms = static_cast<int>(a.open_timeout * 1000);
    ropt.read_timeout_ms = static_cast<int>(a.read_timeout * 1000);
    if (a.listen && !a.quiet) std::fprintf(stderr, "styleid-edge-rt: waiting up to %.0f s for a push to %s\n",
                                           a.open_timeout, a.input.c_str());
    if (styleid_edge_reader_open_with(a.input.c_str(), &ropt, &reader, &width, &height, &fps) != STYLEID_EDGE_OK) {
        styleid_edge_destroy(rt);
        fail("opening " + a.input);
        return is_stream(a.input) ? 1 : 2;  // an unreadable file is bad input (2); an unreachable stream fails (1)
    }
    // from here on Ctrl-C stops reading and finishes the output (during the open it ends the process at once:
    // nothing was written yet)
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    styleid_edge_reset(rt, static_cast<float>(fps));
    styleid_edge_writer *writer = nullptr;
    if (styleid_edge_writer_open(a.output.c_str(), width, height, fps, &writer) != STYLEID_EDGE_OK) {
        styleid_edge_reader_close(reader);
        styleid_edge_destroy(rt);
        return fail("creating " + a.output);
    }

    constexpr int kPool = 6;
    const size_t bytes = static_cast<size_t>(width) * height * 3;
    std::vector<std::vector<uint8_t>> pool(kPool, std::vector<uint8_t>(bytes));
    IndexQueue free_q, decoded_q, done_q;
    for (int i = 0; i < kPool; ++i) free_q.push(i);
    std::atomic<bool> stop{false};
    std::string error;
    std::mutex error_m;
    auto set_error = [&](const std::string &e) {
        std::lock_guard<std::mutex> lock(error_m);
        if (error.empty()) error = e + ": " + styleid_edge_last_error();
        stop = true;
    };
    const int64_t expected_frames = styleid_edge_reader_frame_count(reader);  // -1: unknown (streams, mkv, ...)
    long frames_read = 0;
    bool hit_max = false;
    std::thread decoder([&] {
        int idx = 0, got = 0;
        while (!stop && !g_signalled && free_q.pop(idx)) {
            if (a.max_frames > 0 && frames_read >= a.max_frames) { hit_max = true; free_q.push(idx); break; }
            if (styleid_edge_reader_read(reader, pool[idx].data(), 0, &got) != STYLEID_EDGE_OK) { set_error("reading"); break; }
            if (!got) break;
            decoded_q.push(idx);
            ++frames_read;
        }
        decoded_q.close();
    });
    std::thread encoder([&] {
        int idx = 0;
        while (done_q.pop(idx)) {
            if (!stop && styleid_edge_writer_write(writer, pool[idx].data(), 0) != STYLEID_EDGE_OK) set_error("writing");
            free_q.push(idx);
        }
    });
    Totals totals;
    const bool tty = isatty(fileno(stderr)) != 0;
    double last_line = 0;
    int idx = 0;
    while (decoded_q.pop(idx)) {
        if (stop || g_abort) { free_q.push(idx); continue; }  // read, not anonymized: never written
        if (styleid_edge_anonymize(rt, pool[idx].data(), width, height, 0) != STYLEID_EDGE_OK) {
            set_error("anonymizing frame " + std::to_string(totals.frames));  // that frame is never written
            free_q.push(idx);
            continue;
        }
        count_faces(rt, totals);
        done_q.push(idx);
        if (!a.quiet && tty && totals.frames % 25 == 0)
            std::fprintf(stderr, "\r%ld frames, %.1f frames/s", totals.frames, totals.frames / std::max(seconds(), 1e-9));
        else if (!a.quiet && !tty && seconds() - last_line >= 30) {  // a log file: a line every 30 s, no \r
            last_line = seconds();
            std::fprintf(stderr, "styleid-edge-rt: %ld frames, %.1f frames/s\n", totals.frames,
                         totals.frames / std::max(seconds(), 1e-9));
        }
    }
    free_q.close();
    done_q.close();
    decoder.join();
    encoder.join();
    styleid_edge_reader_close(reader);
    if (writer && styleid_edge_writer_close(writer) != STYLEID_EDGE_OK && error.empty())
        error = std::string("finishing the output: ") + styleid_edge_last_error();
    styleid_edge_destroy(rt);
    if (tty && !a.quiet && totals.frames >= 25) std::fprintf(stderr, "\n");
    std::vector<std::string> warnings;
    // a file that decodes fewer frames than its container records was cut off or is damaged (OpenCV reports
    // a decode failure as the end of the stream); a small margin for rounding in the container's index
    const bool file_input = !is_stream(a.input);
    if (file_input && expected_frames > 1 && !g_signalled && !hit_max &&
        error.empty() && frames_read + std::max<int64_t>(2, expected_frames / 50) < expected_frames)
        warnings.push_back(a.input + " ended after " + std::to_string(frames_read) + " of its " +
                           std::to_string(expected_frames) + " frames: the file is cut off or damaged; the output "
                           "holds the " + std::to_string(totals.frames) + " frames that could be read");
    // Ctrl-C / SIGTERM: how a stream or camera run ends (0); a file run was cut short (128 + the signal)
    const int signal_status = g_signalled && file_input ? 128 + g_signal.load() : 0;
    if (totals.frames == 0) {
        std::error_code ec;
        fs::remove(a.output, ec);  // a file with no frame is no video: leave nothing behind
        write_report(a, totals, seconds(), error, warnings);
        if (g_signalled) {
            std::fprintf(stderr, "styleid-edge-rt: stopped by a signal before the first frame; nothing was written\n");
            return signal_status;
        }
        std::fprintf(stderr, "styleid-edge-rt: no frame could be %s from %s%s%s; nothing was written\n",
                     error.empty() ? "decoded" : "processed", a.input.c_str(), error.empty() ? "" : ": ",
                     error.c_str());
        return error.empty() && file_input ? 2 : 1;  // an undecodable file is bad input; a silent stream fails
    }
    const bool report_ok = write_report(a, totals, seconds(), error, warnings);
    if (!a.quiet)
        std::fprintf(stderr, "styleid-edge-rt: %ld frames, %ld faces (%ld latent, %ld pixelated) in %.1f s\n",
                     totals.frames, totals.faces, totals.by_method["latent"], totals.by_method["pixelate"], seconds());
    for (const auto &w : warnings) std::fprintf(stderr, "styleid-edge-rt: WARNING: %s\n", w.c_str());
    if (!error.empty()) {
        std::fprintf(stderr, "styleid-edge-rt: %s; %s was written but may be incomplete (%ld frames processed)\n",
                     error.c_str(), a.output.c_str(), totals.frames);
        return 3;
    }
    if (g_signalled)
        std::fprintf(stderr, "styleid-edge-rt: stopped by a signal; %s is finished and holds %ld frames\n",
                     a.output.c_str(), totals.frames);
    if (signal_status) return signal_status;
    return warnings.empty() && report_ok ? 0 : 3;
}
