/* test_trt.c - the TensorRT backend against OpenVINO CPU on the same pack (built only when the library has
 * TensorRT; ctest trt_backend, after trt_engines built FP32 engines with `styleid-edge export tensorrt`).
 *
 *   test_trt PACK ENGINE_DIR CLIP
 *
 * Bounds (FP32 engines; TensorRT may use TF32 on Ampere and later, hence not 1e-5):
 *   W+ and S after the swap: max |diff| <= 2e-2 x max |value|;  generated face: mean <= 1.5, max <= 40 levels;
 *   whole frames of the clip: the same faces, methods and fallbacks, mean pixel difference <= 1.5.
 * No GPU visible: exit 77 (ctest: skipped, never passed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "styleid_edge.h"
#include "check.h"

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; ++i) m = fmax(m, fabs(a[i]));
    return m;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; ++i) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void pixel_diff(const uint8_t *a, const uint8_t *b, size_t n, double *mean, int *max) {
    double s = 0;
    *max = 0;
    for (size_t i = 0; i < n; ++i) {
        int d = abs((int)a[i] - (int)b[i]);
        s += d;
        if (d > *max) *max = d;
    }
    *mean = s / (double)n;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s PACK ENGINE_DIR CLIP\n", argv[0]);
        return 2;
    }
    styleid_edge_options cpu_opt, trt_opt;
    styleid_edge_options_init(&cpu_opt);
    styleid_edge_options_init(&trt_opt);
    trt_opt.device = "TensorRT";
    trt_opt.engine_dir = argv[2];
    styleid_edge *cpu = NULL, *trt = NULL;
    if (styleid_edge_create(argv[1], &cpu_opt, &cpu) != STYLEID_EDGE_OK) {
        fprintf(stderr, "FAIL: create (CPU): %s\n", styleid_edge_last_error());
        return 1;
    }
    if (styleid_edge_create(argv[1], &trt_opt, &trt) != STYLEID_EDGE_OK) {
        const char *msg = styleid_edge_last_error();
        styleid_edge_destroy(cpu);
        if (strstr(msg, "no CUDA GPU is visible")) {
            fprintf(stderr, "SKIP: %s\n", msg);
            return 77;
        }
        fprintf(stderr, "FAIL: create (TensorRT): %s\n", msg);
        return 1;
    }
    printf("TensorRT handle: %s\n", styleid_edge_describe(trt));
    CHECK(strstr(styleid_edge_describe(trt), "encoder: TensorRT") && strstr(styleid_edge_describe(trt), "synthesis: TensorRT"),
          "describe: %s", styleid_edge_describe(trt));

    styleid_edge_info info;
    styleid_edge_get_info(cpu, &info);
    const size_t crop = (size_t)info.crop_size * info.crop_size * 3, nw = (size_t)info.n_latent * info.style_dim;
    uint8_t *in = malloc(crop), *face_c = malloc(crop), *face_t = malloc(crop);
    float *w_c = malloc(nw * sizeof(float)), *w_t = malloc(nw * sizeof(float));
    float *s_c = malloc((size_t)info.n_styles * sizeof(float)), *s_t = malloc((size_t)info.n_styles * sizeof(float));
    for (size_t i = 0; i < crop; ++i) in[i] = (uint8_t)((i * 2654435761u) >> 24);  /* a fixed textured crop */
    CHECK(styleid_edge_generate(cpu, in, 7, w_c, s_c, face_c) == STYLEID_EDGE_OK, "generate CPU: %s", styleid_edge_last_error());
    CHECK(styleid_edge_generate(trt, in, 7, w_t, s_t, face_t) == STYLEID_EDGE_OK, "generate TensorRT: %s", styleid_edge_last_error());
    double dw = max_diff(w_c, w_t, nw), ds = max_diff(s_c, s_t, (size_t)info.n_styles), mean;
    int mx;
    pixel_diff(face_c, face_t, crop, &mean, &mx);
    printf("W+ max diff %.3g (scale %.3g), S max diff %.3g (scale %.3g), face mean %.3f max %d\n", dw, max_abs(w_c, nw), ds,
           max_abs(s_c, (size_t)info.n_styles), mean, mx);
    CHECK(dw <= 2e-2 * max_abs(w_c, nw), "W+ differs by %g", dw);
    CHECK(ds <= 2e-2 * max_abs(s_c, (size_t)info.n_styles), "S differs by %g", ds);
    CHECK(mean <= 1.5 && mx <= 40, "generated face differs: mean %.3f max %d", mean, mx);

    /* whole frames */
    styleid_edge_reader *r = NULL;
    int width = 0, height = 0, got = 0, frames = 0;
    if (styleid_edge_reader_open(argv[3], &r, &width, &height, NULL) != STYLEID_EDGE_OK) {
        fprintf(stderr, "FAIL: %s\n", styleid_edge_last_error());
        return 1;
    }
    const size_t bytes = (size_t)width * height * 3;
    uint8_t *frame = malloc(bytes), *out_c = malloc(bytes), *out_t = malloc(bytes);
    while (styleid_edge_reader_read(r, frame, 0, &got) == STYLEID_EDGE_OK && got) {
        CHECK(styleid_edge_anonymize_into(cpu, frame, width, height, 0, out_c, 0) == STYLEID_EDGE_OK, "CPU frame");
        CHECK(styleid_edge_anonymize_into(trt, frame, width, height, 0, out_t, 0) == STYLEID_EDGE_OK, "TensorRT frame: %s",
              styleid_edge_last_error());
        styleid_edge_face fc[16], ft[16];
        size_t nc = 0, nt = 0;
        styleid_edge_get_faces(cpu, fc, 16, &nc);
        styleid_edge_get_faces(trt, ft, 16, &nt);
        CHECK(nc == nt && nc >= 1, "frame %d: %zu vs %zu faces", frames, nc, nt);
        for (size_t i = 0; i < nc && i < nt && i < 16; ++i)
            CHECK(fc[i].method == ft[i].method && fc[i].fallback == ft[i].fallback, "frame %d face %zu", frames, i);
        pixel_diff(out_c, out_t, bytes, &mean, &mx);
        CHECK(mean <= 1.5, "frame %d: mean pixel difference %.3f", frames, mean);
        ++frames;
    }
    styleid_edge_reader_close(r);
    CHECK(frames > 0, "no frames read from %s", argv[3]);
    printf("%d frames compared\n", frames);
    styleid_edge_destroy(cpu);
    styleid_edge_destroy(trt);
    free(in), free(face_c), free(face_t), free(w_c), free(w_t), free(s_c), free(s_t), free(frame), free(out_c), free(out_t);
    if (failures) return 1;
    printf("test_trt: ok\n");
    return 0;
}
