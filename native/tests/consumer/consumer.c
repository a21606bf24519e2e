/* An application linking the installed libstyleid_edge: checks that the library it loads matches the
 * header it was built with, then opens the pack given on the command line and anonymizes one grey frame. */
#include <stdio.h>
#include <string.h>

#include <styleid_edge.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: consumer PACK\n");
        return 2;
    }
    char want[32];
    snprintf(want, sizeof want, "%d.%d.", STYLEID_EDGE_VERSION_MAJOR, STYLEID_EDGE_VERSION_MINOR);
    const char *have = styleid_edge_version();
    if (strncmp(have, want, strlen(want)) != 0) {
        fprintf(stderr, "library %s does not match header %s\n", have, STYLEID_EDGE_VERSION);
        return 1;
    }
    styleid_edge *handle = NULL;
    if (styleid_edge_create(argv[1], NULL, &handle) != STYLEID_EDGE_OK) {
        fprintf(stderr, "create: %s\n", styleid_edge_last_error());
        return 1;
    }
    enum { W = 64, H = 48 };
    static unsigned char frame[W * H * 3];
    memset(frame, 128, sizeof frame);
    size_t faces = 1;
    styleid_edge_status status = styleid_edge_anonymize(handle, frame, W, H, 0);
    if (status == STYLEID_EDGE_OK) status = styleid_edge_get_faces(handle, NULL, 0, &faces);
    if (status != STYLEID_EDGE_OK || faces != 0) {
        fprintf(stderr, "anonymize: status %d, %zu faces: %s\n", (int)status, faces, styleid_edge_last_error());
        styleid_edge_destroy(handle);
        return 1;
    }
    styleid_edge_destroy(handle);
    printf("consumer ok: libstyleid_edge %s\n", have);
    return 0;
}
