/* test_alloc.c - steady state is allocation-free: run the C API on a real clip (faces in every frame),
 * warm up, then count heap allocations (every thread of the process) over the next frames with the
 * LD_PRELOADed alloc_counter interposer and require at most MAX_PER_FRAME per frame on average.
 *
 *   LD_PRELOAD=liballoc_counter.so test_alloc PACK CLIP WARMUP MEASURE MAX_PER_FRAME [latent|pixelate]
 *
 * Frames are read into memory first and fed in ping-pong order (0..n-1, n-2..1, 0..) so the faces move
 * smoothly and keep their track. ALLOC_COUNTER_BACKTRACE=1 prints where each counted allocation comes from;
 * ALLOC_THREADS=N sets the inference threads (measured: 1 thread changes the count by under 6 %).
 * With ALLOC_COUNTER_ENGINE=libopenvino (and ALLOC_COUNTER_ATTRIBUTE=libstyleid_edge) it also requires 0
 * allocations per frame outside OpenVINO's inference (see alloc_counter.c for the rule; our own calls into
 * OpenVINO's API count as outside): everything but the engine's per-infer bookkeeping inside infer() and its
 * worker threads (about 9 small allocations per convolution node per inference in the CPU plugin, measured
 * with a one-node model; no caller can avoid them) allocates nothing.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "styleid_edge.h"

typedef void (*enable_fn)(int);
typedef long (*count_fn)(void);

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s PACK CLIP WARMUP MEASURE MAX_PER_FRAME [latent|pixelate]\n", argv[0]);
        return 2;
    }
    const char *pack = argv[1], *clip = argv[2];
    int warmup = atoi(argv[3]), measure = atoi(argv[4]);
    double max_per_frame = atof(argv[5]);
    int method = argc > 6 && strcmp(argv[6], "pixelate") == 0 ? STYLEID_EDGE_METHOD_PIXELATE : STYLEID_EDGE_METHOD_LATENT;
    enable_fn enable = (enable_fn)dlsym(RTLD_DEFAULT, "alloc_counter_enable");
    count_fn count = (count_fn)dlsym(RTLD_DEFAULT, "alloc_counter_count");
    count_fn direct = (count_fn)dlsym(RTLD_DEFAULT, "alloc_counter_direct");
    count_fn outside = (count_fn)dlsym(RTLD_DEFAULT, "alloc_counter_outside_engine");
    const char *engine = getenv("ALLOC_COUNTER_ENGINE");
    const int attributing = getenv("ALLOC_COUNTER_ATTRIBUTE") != NULL;
    if (!enable || !count || !direct || !outside) {
        fprintf(stderr, "FAIL: alloc_counter is not loaded (run with LD_PRELOAD=liballoc_counter.so)\n");
        return 2;
    }

    int width = 0, height = 0;
    double fps = 0;
    styleid_edge_reader *reader = NULL;
    if (styleid_edge_reader_open(clip, &reader, &width, &height, &fps) != STYLEID_EDGE_OK) {
        fprintf(stderr, "FAIL: %s\n", styleid_edge_last_error());
        return 2;
    }
    const size_t bytes = (size_t)width * height * 3;
    enum { kMaxFrames = 64 };
    uint8_t *frames[kMaxFrames];
    int n = 0, got = 0;
    while (n < kMaxFrames) {
        frames[n] = malloc(bytes);
        if (styleid_edge_reader_read(reader, frames[n], 0, &got) != STYLEID_EDGE_OK || !got) { free(frames[n]); break; }
        ++n;
    }
    styleid_edge_reader_close(reader);
    if (n < 2) {
        fprintf(stderr, "FAIL: %s has %d frames\n", clip, n);
        return 2;
    }

    styleid_edge_options opt;
    styleid_edge_options_init(&opt);
    opt.method = method;
    opt.fps = fps > 0 ? (float)fps : 25.f;
    if (getenv("ALLOC_THREADS")) opt.num_threads = atoi(getenv("ALLOC_THREADS"));
    styleid_edge *h = NULL;
    if (styleid_edge_create(pack, &opt, &h) != STYLEID_EDGE_OK) {
        fprintf(stderr, "FAIL: create: %s\n", styleid_edge_last_error());
        return 2;
    }
    uint8_t *out = malloc(bytes);
    styleid_edge_face faces[16];
    int failures = 0;
    long total = 0, worst = 0, total_direct = 0, total_outside = 0;
    for (int i = 0; i < warmup + measure; ++i) {
        int period = 2 * (n - 1), k = i % period;
        int idx = k < n ? k : period - k;
        const int counting = i >= warmup;
        long before = count(), before_direct = direct(), before_outside = outside();
        if (counting) enable(1);
        styleid_edge_status st = styleid_edge_anonymize_into(h, frames[idx], width, height, 0, out, 0);
        size_t nf = 0;
        styleid_edge_status st2 = styleid_edge_get_faces(h, faces, 16, &nf);
        if (counting) enable(0);
        long used = count() - before, used_direct = direct() - before_direct, used_outside = outside() - before_outside;
        if (st != STYLEID_EDGE_OK || st2 != STYLEID_EDGE_OK) {
            fprintf(stderr, "FAIL: frame %d: %s\n", i, styleid_edge_last_error());
            ++failures;
            break;
        }
        int regenerated = 0;
        for (size_t f = 0; f < nf && f < 16; ++f) regenerated += faces[f].method == method && faces[f].fallback == 0;
        if (nf < 1 || regenerated < 1) {
            fprintf(stderr, "FAIL: frame %d (clip frame %d): %zu faces, %d processed by the method\n", i, idx, nf, regenerated);
            ++failures;
        }
        if (counting) {
            total += used;
            total_direct += used_direct;
            total_outside += used_outside;
            if (used > worst) worst = used;
            printf("frame %2d (clip frame %d): %zu face(s), %ld allocation(s), %ld by libstyleid_edge itself\n", i, idx,
                   nf, used, used_direct);
        }
    }
    double per_frame = measure > 0 ? (double)total / measure : 0;
    printf("%s: %ld allocations in %d steady-state frames (%.2f per frame, worst frame %ld); bound %.2f per frame\n",
           method == STYLEID_EDGE_METHOD_LATENT ? "latent" : "pixelate", total, measure, per_frame, worst, max_per_frame);
    if (attributing) {
        printf("%ld of them made directly by %s (not inside an OpenCV/OpenVINO/oneTBB call)\n", total_direct,
               getenv("ALLOC_COUNTER_ATTRIBUTE"));
        if (total_direct != 0) {
            fprintf(stderr, "FAIL: %ld allocations by %s itself in steady state (want 0; rerun with "
                            "ALLOC_COUNTER_BACKTRACE=1 and look for DIRECT)\n", total_direct, getenv("ALLOC_COUNTER_ATTRIBUTE"));
            ++failures;
        }
    }
    if (engine && *engine) {
        printf("%ld of them outside the inference engine (not under %s's InferRequest::infer nor on its worker threads)\n",
               total_outside, engine);
        if (total_outside != 0) {
            fprintf(stderr, "FAIL: %ld allocations outside %s in steady state (want 0; rerun with "
                            "ALLOC_COUNTER_BACKTRACE=1 and look for OUTSIDE-ENGINE)\n", total_outside, engine);
            ++failures;
        }
    }
    if (per_frame > max_per_frame) {
        fprintf(stderr, "FAIL: %.2f allocations per frame > %.2f (rerun with ALLOC_COUNTER_BACKTRACE=1 to see where)\n",
                per_frame, max_per_frame);
        ++failures;
    }
    styleid_edge_destroy(h);
    for (int i = 0; i < n; ++i) free(frames[i]);
    free(out);
    if (failures) return 1;
    printf("test_alloc: ok\n");
    return 0;
}
