/* asan_dlopen_shim.c - linked into the sanitizer test executable only.
 *
 * oneTBB (inside OpenVINO) dlopens libtbbbind with RTLD_DEEPBIND, which the AddressSanitizer runtime
 * refuses (google/sanitizers#611: a deep-bound library would bypass ASan's malloc). This dlopen,
 * defined in the executable so it is found first, drops RTLD_DEEPBIND and forwards to the next
 * dlopen (ASan's interceptor). The normal build does not contain it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

void *dlopen(const char *file, int mode) {
    static void *(*next)(const char *, int) = 0;
    if (!next) next = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
    return next(file, mode & ~RTLD_DEEPBIND);
}

/* Keep every dlopened library resident: OpenVINO unloads its front-end plugins, after which a leak report
 * cannot name the library that allocated (LeakSanitizer symbolizes at exit). With them resident, the
 * suppressions in lsan.supp match by library name and anything of ours is still reported. */
int dlclose(void *handle) {
    (void)handle;
    return 0;
}
