/* alloc_counter.c - a tiny malloc-counting interposer for the steady-state allocation test.
 *
 * Built as a shared library and LD_PRELOADed: it replaces malloc, calloc, realloc, memalign,
 * posix_memalign, aligned_alloc, valloc and pvalloc (libstdc++'s operator new calls malloc, and
 * OpenCV's fastMalloc / OpenVINO / oneTBB's aligned buffers go through posix_memalign or malloc), and
 * forwards to glibc's __libc_* entry points. While counting is on it counts every allocation made by
 * any thread of the process.
 *
 * Exported for the test program (looked up with dlsym(RTLD_DEFAULT, ...)):
 *   void alloc_counter_enable(int on);   start/stop counting
 *   long alloc_counter_count(void);      allocations counted so far
 *   void alloc_counter_reset(void);      set both counts to 0
 *   long alloc_counter_direct(void);     allocations made directly by the library named in
 *                                        ALLOC_COUNTER_ATTRIBUTE (e.g. libstyleid_edge): the first frame of
 *                                        the allocation's backtrace outside this file, libc and libstdc++
 *                                        (operator new, std::string) lies in that library. Allocations
 *                                        inside OpenCV/OpenVINO/oneTBB calls it makes are not direct.
 *   long alloc_counter_outside_engine(void); allocations the inference engine does not make on its own
 *                                        (ALLOC_COUNTER_ENGINE = the engine's library file-name prefix, e.g.
 *                                        libopenvino). An allocation is the engine's when its backtrace passes
 *                                        through the engine's InferRequest::infer, or when it is on a thread
 *                                        with no frame of the ALLOC_COUNTER_ATTRIBUTE library (an engine
 *                                        worker) and has a frame in a <prefix>* library. Calls our code makes
 *                                        into the engine's API outside infer() (tensor shapes, get_tensor,
 *                                        set_tensor) count as outside, even where the plugin serves them.
 * With ALLOC_COUNTER_BACKTRACE=1 in the environment, each counted allocation also prints its size
 * and a backtrace to stderr (backtrace_symbols_fd, which does not allocate; one thread at a time) -
 * use it to find them.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

#define EXPORT __attribute__((visibility("default")))

static atomic_int g_on = 0;
static atomic_long g_count = 0, g_direct = 0, g_outside = 0;
static int g_trace = -1;              /* -1: not read yet */
static const char *g_attribute = NULL; /* library name for alloc_counter_direct */
static const char *g_engine = NULL;    /* library file-name prefix for alloc_counter_outside_engine */
static atomic_flag g_print = ATOMIC_FLAG_INIT;
static __thread int t_in_hook = 0;

static int runtime_frame(const char *name) {
    return strstr(name, "liballoc_counter") || strstr(name, "libstdc++") || strstr(name, "libc.so") ||
           strstr(name, "libgcc_s");
}

/* Per-thread cache of what a return address is (dladdr is slow and the engine test looks at every frame of every
 * allocation): bit 1 = in an engine library, bit 2 = in the ALLOC_COUNTER_ATTRIBUTE library, bit 4 = in the
 * engine's InferRequest::infer. Direct-mapped, no heap. */
enum { kCacheSize = 4096 };
static __thread void *t_cache_key[kCacheSize];
static __thread unsigned char t_cache_val[kCacheSize];

static unsigned classify(void *addr) {
    size_t slot = ((size_t)addr >> 4) % kCacheSize;
    if (t_cache_key[slot] == addr) return t_cache_val[slot];
    unsigned v = 0;
    Dl_info info;
    if (dladdr(addr, &info) && info.dli_fname) {
        const char *base = strrchr(info.dli_fname, '/');
        base = base ? base + 1 : info.dli_fname;
        if (strncmp(base, g_engine, strlen(g_engine)) == 0) {
            v |= 1;
            if (info.dli_sname && strstr(info.dli_sname, "InferRequest5infer")) v |= 4;
        }
        if (g_attribute && strstr(info.dli_fname, g_attribute)) v |= 2;
    }
    t_cache_key[slot] = addr;
    t_cache_val[slot] = (unsigned char)v;
    return v;
}

static void note(size_t size, const char *what) {
    if (!atomic_load_explicit(&g_on, memory_order_relaxed)) return;
    atomic_fetch_add_explicit(&g_count, 1, memory_order_relaxed);
    if ((!g_trace && !g_attribute && !g_engine) || t_in_hook) return;
    t_in_hook = 1;
    void *frames[64];
    int depth = backtrace(frames, 64); /* first call may allocate (loads libgcc_s): in_hook guards it */
    int direct = 0;
    if (g_attribute) {
        for (int i = 1; i < depth; ++i) {
            Dl_info info;
            if (!dladdr(frames[i], &info) || !info.dli_fname) break;
            if (runtime_frame(info.dli_fname)) continue;
            direct = strstr(info.dli_fname, g_attribute) != NULL;
            break;
        }
        if (direct) atomic_fetch_add_explicit(&g_direct, 1, memory_order_relaxed);
    }
    int engine = 0;
    if (g_engine) {
        int in_engine_lib = 0, caller = 0;
        for (int i = 1; i < depth && !engine; ++i) {
            const unsigned v = classify(frames[i]);
            in_engine_lib |= v & 1;
            caller |= (v >> 1) & 1;
            engine = (v >> 2) & 1;
        }
        if (!engine && in_engine_lib && !caller) engine = 1;  /* an engine worker thread */
        if (!engine) atomic_fetch_add_explicit(&g_outside, 1, memory_order_relaxed);
    }
    if (g_trace) {
        while (atomic_flag_test_and_set(&g_print)) {
        }
        char line[128];
        int n = snprintf(line, sizeof line, "alloc_counter: %s(%zu)%s%s\n", what, size, direct ? " DIRECT" : "",
                         g_engine && !engine ? " OUTSIDE-ENGINE" : "");
        if (n > 0) write(2, line, (size_t)n);
        backtrace_symbols_fd(frames + 1, depth - 1, 2);
        atomic_flag_clear(&g_print);
    }
    t_in_hook = 0;
}

EXPORT void alloc_counter_enable(int on) {
    if (g_trace < 0) {
        const char *e = getenv("ALLOC_COUNTER_BACKTRACE");
        g_trace = e && *e && strcmp(e, "0") != 0;
        const char *a = getenv("ALLOC_COUNTER_ATTRIBUTE");
        g_attribute = a && *a ? a : NULL;
        const char *e2 = getenv("ALLOC_COUNTER_ENGINE");
        g_engine = e2 && *e2 ? e2 : NULL;
        if (g_trace || g_attribute || g_engine) { /* warm up backtrace() so its own first-call allocation is not counted */
            void *frames[4];
            backtrace(frames, 4);
        }
    }
    atomic_store(&g_on, on ? 1 : 0);
}
EXPORT long alloc_counter_count(void) { return atomic_load(&g_count); }
EXPORT long alloc_counter_direct(void) { return atomic_load(&g_direct); }
EXPORT long alloc_counter_outside_engine(void) { return atomic_load(&g_outside); }
EXPORT void alloc_counter_reset(void) {
    atomic_store(&g_count, 0);
    atomic_store(&g_direct, 0);
    atomic_store(&g_outside, 0);
}

EXPORT void *malloc(size_t size) {
    note(size, "malloc");
    return __libc_malloc(size);
}
EXPORT void *calloc(size_t n, size_t size) {
    note(n * size, "calloc");
    return __libc_calloc(n, size);
}
EXPORT void *realloc(void *p, size_t size) {
    note(size, "realloc");
    return __libc_realloc(p, size);
}
EXPORT void free(void *p) { __libc_free(p); }
EXPORT void *memalign(size_t align, size_t size) {
    note(size, "memalign");
    return __libc_memalign(align, size);
}
EXPORT int posix_memalign(void **out, size_t align, size_t size) {
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    note(size, "posix_memalign");
    void *p = __libc_memalign(align, size);
    if (!p && size) return ENOMEM;
    *out = p;
    return 0;
}
EXPORT void *aligned_alloc(size_t align, size_t size) {
    note(size, "aligned_alloc");
    return __libc_memalign(align, size);
}
EXPORT void *valloc(size_t size) {
    note(size, "valloc");
    return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), size);
}
EXPORT void *pvalloc(size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    note(size, "pvalloc");
    return __libc_memalign(page, (size + page - 1) / page * page);
}
