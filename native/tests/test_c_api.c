/* test_c_api.c - the C API on a tiny pack: frames in, faces out; bad packs, missing files and wrong
 * ONNX files give error codes and messages, never a crash.
 *
 *   test_c_api PACK_DIR CLIP SCRATCH_DIR
 */
#define _POSIX_C_SOURCE 200809L  /* setenv, unsetenv */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "styleid_edge.h"
#include "check.h"

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    fputs(text, f);
    fclose(f);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) { perror(path); exit(2); }
}

/* hard links: a symlink out of the pack is refused by the runtime (files must stay inside the pack) */
static void link_into(const char *pack, const char *dir, const char *name, const char *as) {
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/%s", pack, name);
    snprintf(dst, sizeof dst, "%s/%s", dir, as);
    unlink(dst);
    if (link(src, dst) != 0) { perror(dst); exit(2); }
}

/* create must fail with `expect` and a message containing `needle` */
/* A pack directory `dir` with the manifest text and links to these files of `pack` (NULL-terminated). */
static void pack_copy(const char *pack, const char *dir, const char *manifest, const char *const *names) {
    char path[4096];
    make_dir(dir);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    write_file(path, manifest);
    for (; *names; ++names) link_into(pack, dir, *names, *names);
}

static void expect_create_error(const char *pack, const styleid_edge_options *opt, styleid_edge_status expect,
                                const char *needle) {
    styleid_edge *h = (styleid_edge *)0x1;
    styleid_edge_status st = styleid_edge_create(pack, opt, &h);
    const char *msg = styleid_edge_last_error();
    CHECK(st == expect, "create(%s): status %d, expected %d (%s)", pack ? pack : "NULL", st, expect, msg);
    CHECK(h == NULL, "create(%s) failed but returned a handle", pack ? pack : "NULL");
    CHECK(msg && strstr(msg, needle) != NULL, "create(%s): message '%s' lacks '%s'", pack ? pack : "NULL", msg, needle);
    if (st == STYLEID_EDGE_OK) styleid_edge_destroy(h);
}

static void test_errors(const char *pack, const char *scratch) {
    styleid_edge_options opt;
    styleid_edge_options_init(&opt);
    char dir[4096], path[4096];

    expect_create_error(NULL, &opt, STYLEID_EDGE_ERR_ARGUMENT, "pack_dir");
    snprintf(dir, sizeof dir, "%s/no-such-pack", scratch);
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_PACK, "manifest.json");

    /* malformed manifest */
    snprintf(dir, sizeof dir, "%s/bad-json", scratch);
    make_dir(dir);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    write_file(path, "{\"resolution\": 32, ");
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_PACK, "unreadable manifest");

    /* a manifest with a field from the future */
    write_file(path, "{\"resolution\": 32, \"warp_drive\": true}");
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_PACK, "warp_drive");

    /* a real manifest whose model files are missing */
    char manifest_path[4096];
    snprintf(manifest_path, sizeof manifest_path, "%s/manifest.json", pack);
    char *manifest = read_file(manifest_path);
    static const char *const nothing[] = {NULL};
    snprintf(dir, sizeof dir, "%s/missing-files", scratch);
    pack_copy(pack, dir, manifest, nothing);
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_PACK, "missing from the pack directory");

    /* every file present, but the encoder is the detector (wrong ONNX) */
    static const char *const wrong_onnx[] = {"mapping.onnx", "affine.onnx", "synthesis.onnx", "ranks_channels.npy",
                                             "detector.onnx", NULL};
    snprintf(dir, sizeof dir, "%s/wrong-onnx", scratch);
    pack_copy(pack, dir, manifest, wrong_onnx);
    link_into(pack, dir, "detector.onnx", "encoder.onnx");
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_MODEL, "inputs");

    /* the encoder is not ONNX at all */
    snprintf(path, sizeof path, "%s/encoder.onnx", dir);
    unlink(path);
    write_file(path, "this is not a model");
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_MODEL, "encoder.onnx");

    /* no detector file */
    static const char *const no_detector[] = {"mapping.onnx", "affine.onnx", "synthesis.onnx", "encoder.onnx",
                                              "ranks_channels.npy", NULL};
    snprintf(dir, sizeof dir, "%s/no-detector", scratch);
    pack_copy(pack, dir, manifest, no_detector);
    snprintf(path, sizeof path, "%s/detector.onnx", dir);
    unlink(path);
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_MODEL, "detector.onnx");

    /* a rank file that is not .npy */
    link_into(pack, dir, "detector.onnx", "detector.onnx");
    snprintf(path, sizeof path, "%s/ranks_channels.npy", dir);
    unlink(path);
    write_file(path, "garbage");
    expect_create_error(dir, &opt, STYLEID_EDGE_ERR_PACK, "ranks_channels.npy");
    free(manifest);

    /* bad options */
    styleid_edge_options bad = opt;
    bad.strength = 3.0f;
    expect_create_error(pack, &bad, STYLEID_EDGE_ERR_ARGUMENT, "strength");
    bad = opt;
    bad.struct_size = 4;
    expect_create_error(pack, &bad, STYLEID_EDGE_ERR_ARGUMENT, "struct_size");
    bad = opt;
    bad.device = "TensorRT:x";
    expect_create_error(pack, &bad, STYLEID_EDGE_ERR_ARGUMENT, "GPU index must be a number");
#ifndef STYLEID_EDGE_WITH_TENSORRT
    bad = opt;
    bad.device = "TensorRT";  /* this build has no TensorRT: say so, never fall back to the CPU silently */
    expect_create_error(pack, &bad, STYLEID_EDGE_ERR_ARGUMENT, "built without TensorRT");
#else
    bad = opt;
    bad.device = "TensorRT";
    bad.engine_dir = scratch;  /* no engines there: the message says how to build them */
    expect_create_error(pack, &bad, STYLEID_EDGE_ERR_MODEL, "styleid-edge export tensorrt");
#endif

    /* NULL handles and buffers */
    uint8_t px[12] = {0};
    CHECK(styleid_edge_anonymize(NULL, px, 2, 2, 0) == STYLEID_EDGE_ERR_ARGUMENT, "anonymize(NULL handle)");
    CHECK(strstr(styleid_edge_last_error(), "handle") != NULL, "message: %s", styleid_edge_last_error());
    size_t n = 0;
    CHECK(styleid_edge_get_faces(NULL, NULL, 0, &n) == STYLEID_EDGE_ERR_ARGUMENT, "get_faces(NULL handle)");
    CHECK(styleid_edge_seed_z(1, NULL, 4) == STYLEID_EDGE_ERR_ARGUMENT, "seed_z(NULL)");
    styleid_edge_destroy(NULL);
    styleid_edge_reader *r = NULL;
    snprintf(path, sizeof path, "%s/no-such-video.mp4", scratch);
    CHECK(styleid_edge_reader_open(path, &r, NULL, NULL, NULL) == STYLEID_EDGE_ERR_IO && r == NULL, "reader_open(missing)");
    CHECK(strstr(styleid_edge_last_error(), "no-such-video.mp4") != NULL, "message: %s", styleid_edge_last_error());
    styleid_edge_reader_options ropt;
    styleid_edge_reader_options_init(&ropt);
    CHECK(ropt.ffmpeg_options == NULL && ropt.open_timeout_ms == 0 && ropt.read_timeout_ms == 0, "reader options init");
    ropt.read_timeout_ms = -1;
    CHECK(styleid_edge_reader_open_with(path, &ropt, &r, NULL, NULL, NULL) == STYLEID_EDGE_ERR_ARGUMENT && r == NULL,
          "reader_open_with(negative timeout)");
    CHECK(strstr(styleid_edge_last_error(), "timeouts") != NULL, "message: %s", styleid_edge_last_error());
    /* a refused stream fails within the open timeout, with the URL and the fix in the message; the
     * caller's OPENCV_FFMPEG_CAPTURE_OPTIONS comes back unchanged */
    setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "probesize;32", 1);
    styleid_edge_reader_options_init(&ropt);
    ropt.ffmpeg_options = "rtsp_transport;tcp";
    ropt.open_timeout_ms = 3000;
    CHECK(styleid_edge_reader_open_with("rtsp://127.0.0.1:1/none", &ropt, &r, NULL, NULL, NULL) == STYLEID_EDGE_ERR_IO
          && r == NULL, "reader_open_with(refused rtsp)");
    CHECK(strstr(styleid_edge_last_error(), "rtsp://127.0.0.1:1/none") != NULL &&
          strstr(styleid_edge_last_error(), "rtsp_transport") != NULL, "message: %s", styleid_edge_last_error());
    const char *env = getenv("OPENCV_FFMPEG_CAPTURE_OPTIONS");
    CHECK(env && strcmp(env, "probesize;32") == 0, "OPENCV_FFMPEG_CAPTURE_OPTIONS restored: %s", env ? env : "(unset)");
    unsetenv("OPENCV_FFMPEG_CAPTURE_OPTIONS");
}

static void test_frames(const char *pack, const char *clip, int method) {
    styleid_edge_options opt;
    styleid_edge_options_init(&opt);
    opt.method = method;
    styleid_edge *h = NULL;
    styleid_edge_status st = styleid_edge_create(pack, &opt, &h);
    CHECK(st == STYLEID_EDGE_OK, "create: %s", styleid_edge_last_error());
    if (st != STYLEID_EDGE_OK) return;
    styleid_edge_info info;
    CHECK(styleid_edge_get_info(h, &info) == STYLEID_EDGE_OK, "get_info");
    const char *runs = styleid_edge_describe(h);
    CHECK(strstr(runs, "detector: OpenVINO CPU") != NULL &&
              (method != STYLEID_EDGE_METHOD_LATENT || strstr(runs, "synthesis: OpenVINO CPU") != NULL),
          "describe: %s", runs);
    CHECK(strcmp(styleid_edge_describe(NULL), "") == 0, "describe(NULL)");
    CHECK(info.resolution == 32 && info.crop_size == 256 && info.synthetic == 1, "info %d %d", info.resolution, info.crop_size);

    int width = 0, height = 0;
    double fps = 0;
    styleid_edge_reader *reader = NULL;
    st = styleid_edge_reader_open(clip, &reader, &width, &height, &fps);
    CHECK(st == STYLEID_EDGE_OK, "reader_open: %s", styleid_edge_last_error());
    if (st != STYLEID_EDGE_OK) { styleid_edge_destroy(h); return; }
    size_t bytes = (size_t)width * height * 3;
    uint8_t *frame = malloc(bytes), *original = malloc(bytes), *out = malloc(bytes);
    int got = 0, frames = 0;
    while (styleid_edge_reader_read(reader, frame, 0, &got) == STYLEID_EDGE_OK && got) {
        memcpy(original, frame, bytes);
        if (frames % 2 == 0) {
            st = styleid_edge_anonymize(h, frame, width, height, 0);
        } else {
            st = styleid_edge_anonymize_into(h, original, width, height, 0, out, 0);
            CHECK(memcmp(original, frame, bytes) == 0, "anonymize_into modified its input");
            memcpy(frame, out, bytes);
        }
        CHECK(st == STYLEID_EDGE_OK, "anonymize frame %d: %s", frames, styleid_edge_last_error());
        size_t count = 0;
        st = styleid_edge_get_faces(h, NULL, 0, &count);
        CHECK(count >= 1, "frame %d: no face found", frames);
        CHECK(count == 0 || st == STYLEID_EDGE_ERR_BUFFER, "get_faces with capacity 0: status %d", st);
        styleid_edge_face faces[8];
        st = styleid_edge_get_faces(h, faces, 8, &count);
        CHECK(st == STYLEID_EDGE_OK, "get_faces: %s", styleid_edge_last_error());
        for (size_t i = 0; i < count && i < 8; ++i) {
            const styleid_edge_face *f = &faces[i];
            CHECK(f->track_id == 1, "frame %d: track id %lld (one person, one track)", frames, (long long)f->track_id);
            CHECK(f->method == method, "frame %d: method %d, fallback %d", frames, f->method, f->fallback);
            /* the face box changed; the far corner did not */
            int x0 = (int)f->box[0], y0 = (int)f->box[1], x1 = (int)f->box[2], y1 = (int)f->box[3];
            long changed = 0, total = 0;
            for (int y = y0 + (y1 - y0) / 4; y < y1 - (y1 - y0) / 4 && y < height; ++y)
                for (int x = x0 + (x1 - x0) / 4; x < x1 - (x1 - x0) / 4 && x < width; ++x) {
                    if (x < 0 || y < 0) continue;
                    size_t o = ((size_t)y * width + x) * 3;
                    changed += frame[o] != original[o] || frame[o + 1] != original[o + 1];
                    ++total;
                }
            CHECK(total > 0 && changed > total / 2, "frame %d: only %ld of %ld face pixels changed", frames, changed, total);
        }
        CHECK(memcmp(frame, original, 3 * 8) == 0, "frame %d: the top-left corner changed", frames);
        ++frames;
    }
    CHECK(frames == 6, "read %d frames, expected 6", frames);
    CHECK(styleid_edge_reset(h, 25.0f) == STYLEID_EDGE_OK, "reset");
    /* bad frame arguments on a live handle */
    CHECK(styleid_edge_anonymize(h, NULL, width, height, 0) == STYLEID_EDGE_ERR_ARGUMENT, "anonymize(NULL frame)");
    CHECK(styleid_edge_anonymize(h, frame, width, height, 5) == STYLEID_EDGE_ERR_ARGUMENT, "anonymize(bad stride)");
    CHECK(strstr(styleid_edge_last_error(), "stride") != NULL, "message: %s", styleid_edge_last_error());
    /* a frame without faces */
    memset(frame, 128, bytes);
    CHECK(styleid_edge_anonymize(h, frame, width, height, 0) == STYLEID_EDGE_OK, "blank frame");
    free(frame);
    free(original);
    free(out);
    styleid_edge_reader_close(reader);
    styleid_edge_destroy(h);
}

static void test_seeds(void) {
    float z[512];
    CHECK(styleid_edge_seed_z(42, z, 512) == STYLEID_EDGE_OK, "seed_z");
    double mean = 0, var = 0;
    for (int i = 0; i < 512; ++i) mean += z[i];
    mean /= 512;
    for (int i = 0; i < 512; ++i) var += (z[i] - mean) * (z[i] - mean);
    var /= 512;
    CHECK(fabs(mean) < 0.2 && fabs(var - 1.0) < 0.2, "z of seed 42: mean %f var %f", mean, var);
    uint64_t a = 0, b = 0;
    styleid_edge_track_seed(0, 1, &a);
    styleid_edge_track_seed(0, 2, &b);
    CHECK(a != b && a < (1ULL << 63), "track seeds %llu %llu", (unsigned long long)a, (unsigned long long)b);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PACK_DIR CLIP SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    make_dir(argv[3]);
    test_seeds();
    test_errors(argv[1], argv[3]);
    test_frames(argv[1], argv[2], STYLEID_EDGE_METHOD_LATENT);
    test_frames(argv[1], argv[2], STYLEID_EDGE_METHOD_PIXELATE);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_c_api: all checks passed\n");
    return 0;
}
